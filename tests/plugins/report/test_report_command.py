"""`tunewatch report` from the command line: a report now, printed, or as JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tunewatch.daemon.cli import main

from .stores import HOUR, StoreBuilder


def state_with_a_run(tmp_path: Path) -> Path:
    builder = StoreBuilder(tmp_path)
    now = time.time()
    builder.points(
        "run-`a`|b", [10, 20, 30], [now - 2 * HOUR, now - HOUR, now - 60], {"loss": [2.0, 1.5, 1.2]}
    )
    builder.close()
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nstate_dir = "{builder.db.parent}"\n')
    return config


def test_a_report_is_written_now_and_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = state_with_a_run(tmp_path)
    out = tmp_path / "out"
    assert main(["--config", str(config), "report", "--print", "--out", str(out)]) == 0
    printed, said = capsys.readouterr()
    assert printed.startswith("# Training report")
    assert "run-\\`a\\`\\|b" in printed  # the run's name stays text in the Markdown
    written = sorted(p.name for p in out.iterdir())
    assert "latest_report.md" in written and any(n.endswith(".png") for n in written)
    assert "Report written: " in said


def test_json_has_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = state_with_a_run(tmp_path)
    assert main(["--config", str(config), "report", "--json", "--since", "6h"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["health"].startswith("1 run")
    assert [r["name"] for r in data["runs"]] == ["run-`a`|b"]
    assert data["runs"][0]["step"] == 30 and data["runs"][0]["loss"] == 1.2


def test_without_a_state_database_it_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "none"}"\n')
    assert main(["--config", str(config), "report"]) == 2
    assert "no state database yet" in capsys.readouterr().err
