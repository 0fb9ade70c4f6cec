"""The systemd user unit that runs tunewatch as a service, and its installation.

`render_unit` also generates the repo's shipped `systemd/tunewatch.service`, so the two agree.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tunewatch.daemon.atomic import write_atomic

UNIT_NAME = "tunewatch.service"

# What a person runs after installing: load the unit, start it now and at every login, keep it
# running after logout (headless training boxes), and follow its logs.
FOLLOW_UP_COMMANDS = (
    "systemctl --user daemon-reload",
    f"systemctl --user enable --now {UNIT_NAME}",
    "loginctl enable-linger $USER",
    "journalctl --user -u tunewatch -f",
)

# Characters that end or change an unquoted ExecStart word; such words go in double quotes.
_QUOTE_TRIGGERS = frozenset(" \t\n\r\v\f\"'\\;")
_C_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}

_UNIT_TEMPLATE = """\
# tunewatch as a systemd user service. To install by hand: copy this file to
# ~/.config/systemd/user/, then `systemctl --user daemon-reload` and
# `systemctl --user enable --now tunewatch.service`.

[Unit]
# No Documentation=: there is no man page to point at; `tunewatch --help` is the reference.
Description=tunewatch: watches LLM fine-tuning runs and publishes their events

[Service]
# The daemon reports READY=1 once it is watching, so `systemctl start` waits for real readiness.
Type=notify
# Only the daemon itself may report state, not the child processes that plugins start.
NotifyAccess=main
ExecStart={exec_start}
# SIGHUP makes the daemon reload its configuration without a restart.
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5
# The daemon pings from its event loop at half this interval: a hung loop gets it restarted.
WatchdogSec={watchdog_s}
# Enough to flush state after SIGTERM; short enough not to hold up logout or shutdown.
TimeoutStopSec=20
# Without a TTY Python buffers stdout; unbuffered, lines reach the journal as they happen.
Environment=PYTHONUNBUFFERED=1
# Hardening that user units get without user namespaces. No PrivateDevices, ProtectSystem or
# PrivateTmp: those need user namespaces here, and PrivateDevices would hide the GPUs.
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
# Files the daemon writes (state, event logs) are readable by this user only.
UMask=0077

[Install]
# The user manager's default.target: started at login, or at boot once lingering is enabled.
WantedBy=default.target
"""


@dataclass(frozen=True, slots=True)
class InstallResult:
    """Where the unit went and what a person must run next."""

    path: Path
    backup: Path | None  # the previous, different unit, kept rather than lost
    unchanged: bool  # the same unit was already installed; nothing was written
    commands: tuple[str, ...] = FOLLOW_UP_COMMANDS

    def __str__(self) -> str:
        if self.unchanged:
            lines = [f"{self.path} is already up to date."]
        else:
            lines = [f"Wrote {self.path}."]
        if self.backup is not None:
            lines.append(f"The previous unit was different; it is kept as {self.backup}.")
        lines.append("Next, run:")
        lines.extend(f"  {command}" for command in self.commands)
        return "\n".join(lines)


def render_unit(
    exec_start: Sequence[str], *, watchdog_s: int = 30, escape_specifiers: bool = True
) -> str:
    """The unit file's text, running `exec_start` (an argv whose first item is absolute).

    `escape_specifiers=False` keeps systemd specifiers such as `%h` live; only the shipped unit
    wants that, every real path escapes its `%`.
    """
    if not exec_start:
        raise ValueError("exec_start must name a command")
    if escape_specifiers and not PurePosixPath(exec_start[0]).is_absolute():
        raise ValueError(f"systemd needs an absolute command path, got {exec_start[0]!r}")
    if watchdog_s < 1:
        raise ValueError(f"watchdog_s must be at least 1, got {watchdog_s}")
    command = format_exec_start(exec_start, escape_specifiers=escape_specifiers)
    return _UNIT_TEMPLATE.format(exec_start=command, watchdog_s=watchdog_s)


def format_exec_start(exec_start: Sequence[str], *, escape_specifiers: bool = True) -> str:
    """`exec_start` written so that systemd's ExecStart= parser reads back the same argv."""
    path, *args = exec_start
    # systemd expands "$$" in arguments only; the command path is taken literally.
    words = [_quote_word(path, escape_specifiers=escape_specifiers, escape_dollar=False)]
    words.extend(
        _quote_word(arg, escape_specifiers=escape_specifiers, escape_dollar=True) for arg in args
    )
    return " ".join(words)


def _quote_word(word: str, *, escape_specifiers: bool, escape_dollar: bool) -> str:
    # '%' starts a specifier and '$' an environment variable; doubling makes them literal.
    text = word.replace("%", "%%") if escape_specifiers else word
    text = text.replace("$", "$$") if escape_dollar else text
    if text and not any(char in _QUOTE_TRIGGERS or not char.isprintable() for char in text):
        return text
    return '"' + "".join(_c_escape(char) for char in text) + '"'


def default_exec_start() -> list[str]:
    """The command that starts the daemon the way this process was started."""
    script = _tunewatch_script()
    if script is not None:
        return [script, "run"]
    # sys.executable stays unresolved: resolving a venv's python symlink would escape the venv.
    return [sys.executable, "-m", "tunewatch.daemon", "run"]


def default_unit_dir() -> Path:
    """The user manager's unit directory: $XDG_CONFIG_HOME/systemd/user, else ~/.config/..."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", ""))
    # The XDG spec says to ignore relative values (an empty one reads as "."), and systemd does too.
    base = config_home if config_home.is_absolute() else Path.home() / ".config"
    return base / "systemd" / "user"


def install_service(
    *, exec_start: Sequence[str] | None = None, unit_dir: Path | None = None
) -> InstallResult:
    """Writes the unit atomically, keeping a different existing one as `<unit>.bak`."""
    text = render_unit(default_exec_start() if exec_start is None else exec_start).encode("utf-8")
    directory = default_unit_dir() if unit_dir is None else unit_dir
    path = directory / UNIT_NAME
    previous = _read_if_exists(path)
    if previous == text:
        return InstallResult(path=path, backup=None, unchanged=True)
    directory.mkdir(parents=True, exist_ok=True)
    backup = None
    if previous is not None:
        backup = path.with_name(UNIT_NAME + ".bak")
        write_atomic(backup, previous)
    write_atomic(path, text)
    return InstallResult(path=path, backup=backup, unchanged=False)


def _tunewatch_script() -> str | None:
    """Absolute path of the `tunewatch` console script: the running one, else the one on PATH."""
    argv0 = sys.argv[0] if sys.argv else ""
    # The running script comes first: it may live in a venv that is not on PATH.
    if Path(argv0).name == "tunewatch" and os.access(argv0, os.X_OK):
        # absolute(), not resolve(): a symlink such as ~/.local/bin/tunewatch is the stable name.
        return str(Path(argv0).absolute())
    found = shutil.which("tunewatch")
    return str(Path(found).absolute()) if found is not None else None


def _c_escape(char: str) -> str:
    if char in _C_ESCAPES:
        return _C_ESCAPES[char]
    if char.isprintable():
        return char
    return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8"))


def _read_if_exists(path: Path) -> bytes | None:
    # Bytes, not text: an old unit in another encoding is still kept, byte for byte.
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
