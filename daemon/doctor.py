"""`tunewatch doctor`: what would stop tunewatch from watching or telling, each with its fix.

The core checks the machine (systemd user manager and lingering, the installed unit, the
watched paths, inotify and open-file limits, disk space); each plugin adds its own through a
`doctor_checks(config, settings)` classmethod (the notify plugin: the session bus and the
notification server; compare: torch, CUDA and free GPU memory; inbox: a tokenizer).
"""

from __future__ import annotations

import getpass
import glob
import os
import resource
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from tunewatch.daemon.config import Settings
from tunewatch.daemon.text import printable

Level = Literal["ok", "warning", "error"]
# Below these, the daemon misses files or runs out of descriptors on a busy machine.
MIN_INOTIFY_WATCHES = 8192
MIN_INOTIFY_INSTANCES = 128
MIN_OPEN_FILES = 1024
# A volume below this much free space fails checkpoint saves and the state database soon.
MIN_FREE_FRACTION, MIN_FREE_BYTES = 0.05, 2 << 30
WARN_FREE_FRACTION = 0.15
COMMAND_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One thing checked: what was found and, when it is not ok, what to do about it."""

    name: str
    level: Level
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.level == "ok"


def core_checks(settings: Settings) -> list[CheckResult]:
    return [
        systemd_user_manager(),
        lingering(),
        installed_unit(),
        *watched_paths(settings.daemon.runs),
        inotify_limits(),
        open_file_limit(),
        *disk_space([settings.state_dir(), *_run_dirs(settings.daemon.runs)]),
    ]


def run_checks(
    settings: Settings, plugin_checks: Iterable[Callable[[], list[CheckResult]]]
) -> list[CheckResult]:
    """The core's checks, then each plugin's; a check that raises is itself a finding."""
    results = core_checks(settings)
    for check in plugin_checks:
        try:
            results.extend(check())
        except Exception as exc:  # a broken third-party check must not hide the others
            results.append(
                CheckResult(
                    getattr(check, "__qualname__", "plugin check"), "error", f"failed: {exc!r}"
                )
            )
    return results


def systemd_user_manager() -> CheckResult:
    name = "systemd user manager"
    out = _run(["systemctl", "--user", "is-system-running"])
    state = out.strip() if out is not None else ""
    if state in ("running", "degraded", "starting"):
        return CheckResult(name, "ok", f"running ({state})")
    return CheckResult(
        name,
        "warning",
        f"not reachable ({state or 'systemctl --user failed'})",
        "tunewatch can still run in the foreground (tunewatch run, in tmux or screen); as a "
        "service it needs a user session with systemd (log in once, or: loginctl enable-linger)",
    )


def lingering(user: str | None = None) -> CheckResult:
    name = "lingering"
    user = user or getpass.getuser()
    out = _run(["loginctl", "show-user", user, "--property=Linger"])
    if out is not None and out.strip() == "Linger=yes":
        return CheckResult(name, "ok", f"on for {user}: the service keeps running after logout")
    return CheckResult(
        name,
        "warning",
        f"off for {user} (or loginctl unavailable): the service stops when you log out",
        f"loginctl enable-linger {user}",
    )


def installed_unit(unit_dir: Path | None = None) -> CheckResult:
    from tunewatch.daemon.systemd_unit import (
        UNIT_NAME,
        default_exec_start,
        default_unit_dir,
        render_unit,
    )

    name = "systemd unit"
    path = (unit_dir or default_unit_dir()) / UNIT_NAME
    try:
        installed = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CheckResult(name, "warning", f"{path} is not installed", "tunewatch install-service")
    except OSError as exc:
        return CheckResult(
            name, "error", f"{path}: {exc.strerror}", f"check the permissions of {path}"
        )
    if installed == render_unit(default_exec_start()):
        return CheckResult(name, "ok", f"{path} runs this installation")
    return CheckResult(
        name,
        "error",
        f"{path} does not run this installation ({' '.join(default_exec_start())})",
        "tunewatch install-service (the old unit is kept as .bak), then "
        "systemctl --user daemon-reload && systemctl --user restart tunewatch",
    )


def watched_paths(patterns: Sequence[str]) -> list[CheckResult]:
    results = []
    for pattern in patterns:
        name = f"watched path {pattern}"
        matches = [Path(p) for p in glob.glob(os.path.expanduser(pattern))]
        if not matches:
            results.append(
                CheckResult(
                    name,
                    "warning",
                    "matches nothing yet (it is watched for and picked up when it appears)",
                    "check the spelling in [daemon] runs, or start the run",
                )
            )
            continue
        unreadable = [
            p for p in matches if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0))
        ]
        if unreadable:
            results.append(
                CheckResult(
                    name,
                    "error",
                    f"cannot be read: {', '.join(printable(str(p)) for p in unreadable[:5])}",
                    "give your user read (and, for folders, execute) permission on them",
                )
            )
        else:
            results.append(CheckResult(name, "ok", f"{len(matches)} path(s), readable"))
    return results


def inotify_limits(proc_dir: Path = Path("/proc/sys/fs/inotify")) -> CheckResult:
    name = "inotify limits"
    try:
        watches = int((proc_dir / "max_user_watches").read_text())
        instances = int((proc_dir / "max_user_instances").read_text())
    except (OSError, ValueError):
        return CheckResult(name, "warning", "cannot read the limits (not Linux?)", "")
    detail = f"max_user_watches {watches:,}, max_user_instances {instances:,}"
    if watches >= MIN_INOTIFY_WATCHES and instances >= MIN_INOTIFY_INSTANCES:
        return CheckResult(name, "ok", detail)
    return CheckResult(
        name,
        "warning",
        detail + " (low: files may be noticed late, by the periodic rescan only)",
        "sudo sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512 "
        "(and the same lines in /etc/sysctl.d/90-inotify.conf to keep them)",
    )


def open_file_limit() -> CheckResult:
    name = "open-file limit"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    detail = f"{soft:,} (hard limit {hard:,})" if hard != resource.RLIM_INFINITY else f"{soft:,}"
    if soft == resource.RLIM_INFINITY or soft >= MIN_OPEN_FILES:
        return CheckResult(name, "ok", detail)
    return CheckResult(
        name,
        "warning",
        detail + " (low for many runs)",
        "ulimit -n 4096 before tunewatch run; the service sets its own (LimitNOFILE)",
    )


def disk_space(
    paths: Iterable[Path], usage_of: Callable[[Path], Any] = shutil.disk_usage
) -> list[CheckResult]:
    results, seen = [], set()
    for path in paths:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None:
            continue
        try:
            device = os.stat(existing).st_dev
            usage = usage_of(existing)
        except OSError:
            continue
        if device in seen:
            continue
        seen.add(device)
        free = usage.free / usage.total if usage.total else 1.0
        name = f"disk space {printable(str(existing))}"
        detail = f"{usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.1f} GiB ({free:.0%})"
        if free < MIN_FREE_FRACTION or usage.free < MIN_FREE_BYTES:
            level: Level = "error"
        elif free < WARN_FREE_FRACTION:
            level = "warning"
        else:
            results.append(CheckResult(name, "ok", detail))
            continue
        fix = "free space: old checkpoints (checkpoint-N folders) are usually the largest"
        results.append(CheckResult(name, level, detail, fix))
    return results


def render_text(results: Sequence[CheckResult]) -> str:
    marks = {"ok": "ok  ", "warning": "WARN", "error": "FAIL"}
    lines = []
    for r in results:
        lines.append(f"{marks[r.level]}  {printable(r.name)}: {printable(r.detail)}")
        if r.fix and not r.ok:
            lines.append(f"      fix: {printable(r.fix)}")
    problems = sum(r.level == "error" for r in results)
    warnings = sum(r.level == "warning" for r in results)
    lines.append(
        "All is well."
        if not problems and not warnings
        else f"{problems} problem(s), {warnings} warning(s)."
    )
    return "\n".join(lines) + "\n"


def to_json(results: Sequence[CheckResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def _run_dirs(patterns: Sequence[str]) -> list[Path]:
    found = [Path(p) for pattern in patterns for p in glob.glob(os.path.expanduser(pattern))]
    return found or [Path(os.path.expanduser(p)).parent for p in patterns]


def _run(argv: Sequence[str]) -> str | None:
    """The command's stdout, or None when it is missing or fails to answer."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 or proc.stdout.strip() else None
