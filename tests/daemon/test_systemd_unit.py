"""The systemd user unit: what it says, how it is installed, and that systemd accepts it."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tunewatch.daemon.systemd_unit import (
    InstallResult,
    default_exec_start,
    format_exec_start,
    install_service,
    render_unit,
)

SHIPPED_UNIT = Path(__file__).resolve().parents[2] / "systemd" / "tunewatch.service"
SHIPPED_EXEC_START = ["%h/.local/bin/tunewatch", "run"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home directory, so no test sees or touches the real ~/.config."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return home


@pytest.fixture
def unit_dir(tmp_path: Path, home: Path) -> Path:
    return tmp_path / "config" / "systemd" / "user"


def make_executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is not None:
        return found
    if os.environ.get("CI"):
        pytest.fail("systemd-analyze is missing: CI must install systemd to verify the unit")
    pytest.skip("systemd-analyze is not installed (CI installs it and runs this check)")


def analyze(unit: Path, home: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify --user` in a private environment: no running systemd needed."""
    # A user manager, even the throwaway one verify builds, insists on a runtime dir it owns.
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir(exist_ok=True)
    runtime_dir.chmod(0o700)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # what %h expands to in --user mode
        "XDG_RUNTIME_DIR": str(runtime_dir),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    return subprocess.run(
        [systemd_analyze(), "verify", "--user", str(unit)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_verifies_cleanly(unit: Path, home: Path, tmp_path: Path) -> None:
    result = analyze(unit, home, tmp_path)
    # Warnings (an unknown key, a missing executable) leave the exit code 0: any output fails.
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def service_section(text: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser["Service"]


def exec_start_line(unit: Path) -> str:
    (line,) = (line for line in unit.read_text().splitlines() if line.startswith("ExecStart="))
    return line


def test_installed_unit_verifies_cleanly(home: Path, unit_dir: Path, tmp_path: Path) -> None:
    script = make_executable(tmp_path / "venv" / "bin" / "tunewatch")

    result = install_service(exec_start=[str(script), "run"])

    assert result.path == unit_dir / "tunewatch.service"
    assert exec_start_line(result.path) == f"ExecStart={script} run"
    assert_verifies_cleanly(result.path, home, tmp_path)


def test_unit_is_installed_under_home_config_without_xdg_config_home(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    script = make_executable(tmp_path / "tunewatch")

    result = install_service(exec_start=[str(script), "run"])

    assert result.path == home / ".config" / "systemd" / "user" / "tunewatch.service"
    assert result.path.is_file()


def test_install_tells_a_person_what_to_run_next(home: Path, tmp_path: Path) -> None:
    script = make_executable(tmp_path / "tunewatch")

    result = install_service(exec_start=[str(script), "run"])

    assert result.commands == (
        "systemctl --user daemon-reload",
        "systemctl --user enable --now tunewatch.service",
        "loginctl enable-linger $USER",
        "journalctl --user -u tunewatch -f",
    )
    printed = str(result)
    assert str(result.path) in printed
    assert all(command in printed for command in result.commands)


def test_unit_is_written_atomically_and_readable(
    home: Path, unit_dir: Path, tmp_path: Path
) -> None:
    script = make_executable(tmp_path / "tunewatch")

    result = install_service(exec_start=[str(script), "run"])

    # No temporary file is left behind next to the unit.
    assert sorted(path.name for path in unit_dir.iterdir()) == ["tunewatch.service"]
    assert result.path.stat().st_mode & 0o777 == 0o644


def test_reinstalling_the_same_unit_changes_nothing(
    home: Path, unit_dir: Path, tmp_path: Path
) -> None:
    script = make_executable(tmp_path / "tunewatch")
    first = install_service(exec_start=[str(script), "run"])

    second = install_service(exec_start=[str(script), "run"])

    assert second == InstallResult(path=first.path, backup=None, unchanged=True)
    assert "already up to date" in str(second)
    assert sorted(path.name for path in unit_dir.iterdir()) == ["tunewatch.service"]


def test_a_different_existing_unit_is_kept_as_bak(
    home: Path, unit_dir: Path, tmp_path: Path
) -> None:
    unit_dir.mkdir(parents=True)
    hand_edited = b"[Service]\nExecStart=/opt/old/tunewatch run --verbose\n"
    (unit_dir / "tunewatch.service").write_bytes(hand_edited)
    script = make_executable(tmp_path / "tunewatch")

    result = install_service(exec_start=[str(script), "run"])

    assert result.backup == unit_dir / "tunewatch.service.bak"
    assert result.backup.read_bytes() == hand_edited
    assert str(result.backup) in str(result)
    assert exec_start_line(result.path) == f"ExecStart={script} run"
    # The backup's suffix is no unit type, so systemd ignores it.
    assert_verifies_cleanly(result.path, home, tmp_path)


def test_an_exec_path_with_a_space_and_a_percent_is_quoted(home: Path, tmp_path: Path) -> None:
    script = make_executable(tmp_path / "my tools" / "100%" / "tunewatch")

    result = install_service(exec_start=[str(script), "run"])

    quoted = str(script).replace("%", "%%")
    assert exec_start_line(result.path) == f'ExecStart="{quoted}" run'
    # verify reports "Command ... is not executable" unless it reads back the real path.
    assert_verifies_cleanly(result.path, home, tmp_path)


def test_arguments_are_written_so_systemd_reads_them_back_unchanged() -> None:
    argv = ["/usr/bin/tunewatch", "run", "--config", '/data/my "runs"/50%.toml', "$HOME", ""]

    assert format_exec_start(argv) == (
        r'/usr/bin/tunewatch run --config "/data/my \"runs\"/50%%.toml" $$HOME ""'
    )


def test_a_dollar_in_the_command_path_stays_single(home: Path, tmp_path: Path) -> None:
    # systemd expands "$$" in arguments only, so doubling it in the path would break the path.
    script = make_executable(tmp_path / "price$" / "tunewatch")

    result = install_service(exec_start=[str(script), "run"])

    assert exec_start_line(result.path) == f"ExecStart={script} run"
    assert_verifies_cleanly(result.path, home, tmp_path)


def test_the_unit_runs_the_daemon_as_a_watched_notify_service(tmp_path: Path) -> None:
    service = service_section(render_unit(["/usr/bin/tunewatch", "run"], watchdog_s=45))

    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "45"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"
    assert service["Environment"] == "PYTHONUNBUFFERED=1"
    # These need user namespaces in a user unit, and PrivateDevices would hide the GPUs.
    assert not {"PrivateDevices", "ProtectSystem", "PrivateTmp"} & set(service)


def test_render_unit_refuses_a_command_systemd_cannot_run() -> None:
    with pytest.raises(ValueError, match="absolute"):
        render_unit(["tunewatch", "run"])
    with pytest.raises(ValueError, match="command"):
        render_unit([])


def test_the_shipped_unit_is_what_render_unit_produces() -> None:
    expected = render_unit(SHIPPED_EXEC_START, escape_specifiers=False)

    assert SHIPPED_UNIT.read_text() == expected, (
        "systemd/tunewatch.service drifted from render_unit; regenerate it with: python -c "
        "'from tunewatch.daemon.systemd_unit import render_unit; print(render_unit("
        '["%h/.local/bin/tunewatch", "run"], escape_specifiers=False), end="")\' '
        "> systemd/tunewatch.service"
    )
    assert exec_start_line(SHIPPED_UNIT) == "ExecStart=%h/.local/bin/tunewatch run"


def test_the_shipped_unit_verifies_cleanly_with_tunewatch_in_local_bin(
    home: Path, tmp_path: Path
) -> None:
    # %h is the HOME of the user manager: before pip install --user, the command is missing...
    missing = analyze(SHIPPED_UNIT, home, tmp_path)
    assert missing.returncode != 0
    assert str(home / ".local" / "bin" / "tunewatch") in missing.stdout + missing.stderr

    # ...and once it is there, the unit is clean.
    make_executable(home / ".local" / "bin" / "tunewatch")
    assert_verifies_cleanly(SHIPPED_UNIT, home, tmp_path)


def test_default_command_is_the_running_tunewatch_script(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = make_executable(tmp_path / "venv" / "bin" / "tunewatch")
    monkeypatch.setattr(sys, "argv", [str(script), "install-service"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    assert default_exec_start() == [str(script), "run"]
    result = install_service()
    assert exec_start_line(result.path) == f"ExecStart={script} run"


def test_default_command_falls_back_to_tunewatch_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = make_executable(tmp_path / "bin" / "tunewatch")
    monkeypatch.setattr(sys, "argv", ["/usr/bin/python3", "-c", "..."])
    monkeypatch.setenv("PATH", str(script.parent))

    assert default_exec_start() == [str(script), "run"]


def test_default_command_without_a_script_runs_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/bin/python3", "-c", "..."])
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    assert default_exec_start() == [sys.executable, "-m", "tunewatch.daemon", "run"]
