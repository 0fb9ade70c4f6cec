"""`tunewatch compare A B` from the command line: tables or JSON, refusals as usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.tiny_models import TinySnapshots, make_pickle_only_snapshot

from tunewatch.daemon.cli import main

QUICK = ["--device", "cpu", "--max-new-tokens", "4", "--repeats", "2"]


def test_the_trained_checkpoint_is_recommended_with_the_evidence(
    tiny_snapshots: TinySnapshots, capsys: pytest.CaptureFixture[str]
) -> None:
    s = tiny_snapshots
    code = main(
        [
            "compare",
            str(s.early_checkpoint),
            str(s.final_checkpoint),
            "--test-file",
            str(s.test_file),
            *QUICK,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for section in ("Speed", "Quality", "Size", "Setup", "Side-by-side", "Recommendation"):
        assert section in out
    assert "better: +" in out and "use B (checkpoint-450)" in out


def test_json_has_every_figure_and_the_verdict(
    tiny_snapshots: TinySnapshots, capsys: pytest.CaptureFixture[str]
) -> None:
    s = tiny_snapshots
    args = [str(s.final_checkpoint), str(s.early_checkpoint), "--test-file", str(s.test_file)]
    assert main(["compare", *args, *QUICK, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["setup"]["device"] == "cpu" and data["setup"]["max_new_tokens"] == 4
    assert data["setup"]["test_items"] == len(data["items"]) > 0
    assert data["significance"]["verdict"] == "worse"  # B (early) against A (final)
    assert data["recommendation"]["choice"] == "a"
    assert data["a"]["accuracy"] > data["b"]["accuracy"]


def test_a_pickle_only_snapshot_is_a_usage_error_that_says_how_to_convert(
    tiny_snapshots: TinySnapshots, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pickle-ran"
    bad = make_pickle_only_snapshot(tiny_snapshots.final_model, tmp_path / "bad", marker)
    assert main(["compare", str(tiny_snapshots.final_model), str(bad), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "only pickle weights" in err and "safe_serialization=True" in err
    assert not marker.exists()
