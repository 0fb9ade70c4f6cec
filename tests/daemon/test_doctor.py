"""`tunewatch doctor`: each check finds what is wrong and says how to fix it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from tunewatch.daemon.config import Settings
from tunewatch.daemon.doctor import (
    CheckResult,
    disk_space,
    inotify_limits,
    installed_unit,
    render_text,
    run_checks,
    watched_paths,
)
from tunewatch.daemon.systemd_unit import UNIT_NAME, install_service

Usage = namedtuple("Usage", "total used free")
GIB = 2**30


def test_low_inotify_limits_are_a_warning_with_the_sysctl_fix(tmp_path: Path) -> None:
    (tmp_path / "max_user_watches").write_text("8192\n")
    (tmp_path / "max_user_instances").write_text("128\n")
    assert inotify_limits(tmp_path).ok
    (tmp_path / "max_user_watches").write_text("1024\n")
    low = inotify_limits(tmp_path)
    assert low.level == "warning" and "max_user_watches 1,024" in low.detail
    assert "sysctl fs.inotify.max_user_watches=" in low.fix
    assert inotify_limits(tmp_path / "absent").level == "warning"


def test_the_unit_must_run_this_installation(tmp_path: Path) -> None:
    missing = installed_unit(tmp_path)
    assert missing.level == "warning" and missing.fix == "tunewatch install-service"
    install_service(unit_dir=tmp_path)
    assert installed_unit(tmp_path).ok
    (tmp_path / UNIT_NAME).write_text("[Service]\nExecStart=/old/venv/bin/tunewatch run\n")
    stale = installed_unit(tmp_path)
    assert stale.level == "error" and "tunewatch install-service" in stale.fix


def test_watched_paths_that_match_nothing_yet_are_a_warning(tmp_path: Path) -> None:
    (tmp_path / "run-a").mkdir()
    found, missing = watched_paths([str(tmp_path / "run-*"), str(tmp_path / "later")])
    assert found.ok and "1 path(s)" in found.detail
    assert missing.level == "warning" and "watched for" in missing.detail


def test_a_volume_nearly_full_is_an_error_once_per_volume(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = disk_space(
        [tmp_path / "a", tmp_path / "b"], lambda _: Usage(100 * GIB, 98 * GIB, 2 * GIB - 1)
    )
    assert len(full) == 1  # both folders are on one volume
    assert full[0].level == "error" and "checkpoint" in full[0].fix
    tight = disk_space([tmp_path], lambda _: Usage(100 * GIB, 90 * GIB, 10 * GIB))
    assert tight[0].level == "warning"
    real = disk_space([tmp_path])  # this machine's real disk
    assert real[0].name.startswith("disk space ") and "GiB free of" in real[0].detail


def test_a_plugin_check_that_raises_is_a_finding_and_the_others_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))

    def broken() -> list[CheckResult]:
        raise RuntimeError("oops")

    def fine() -> list[CheckResult]:
        return [CheckResult("third party", "ok", "all good")]

    results = run_checks(Settings(), [broken, fine])
    names = [r.name for r in results]
    assert "inotify limits" in names and "third party" in names
    failed = next(r for r in results if "oops" in r.detail)
    assert failed.level == "error"
    assert "1 problem(s)" in render_text(results)


def test_the_command_checks_the_plugins_too_and_says_it_as_json(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[daemon]\nruns = ["{tmp_path / "runs" / "*"}"]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tunewatch.daemon", "--config", str(config), "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    results = json.loads(proc.stdout)
    names = {r["name"] for r in results}
    for expected in (
        "systemd user manager",
        "lingering",
        "systemd unit",
        "inotify limits",
        "open-file limit",
        "comparisons (torch, GPU)",
        "tokenizer for validation",
    ):
        assert expected in names, names
    assert all(r["fix"] for r in results if r["level"] != "ok")
    assert proc.returncode == (1 if any(r["level"] == "error" for r in results) else 0)
