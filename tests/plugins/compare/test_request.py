"""What the daemon and the comparison process exchange survives the JSON files exactly."""

from __future__ import annotations

from pathlib import Path

from tunewatch.plugins.compare.request import ComparisonOutcome, ComparisonRequest

from .comparisons import comparison as make_comparison


def test_a_request_round_trips(tmp_path: Path) -> None:
    request = ComparisonRequest(
        a="/snapshots/step-100",
        b="/snapshots/step-200 ü|x",
        test_file="/runs/a/test.jsonl",
        device="cuda",
        weights={"decode_speed": 2.0},
    )
    request.write(tmp_path / "r.json")
    assert ComparisonRequest.read(tmp_path / "r.json") == request


def test_an_outcome_with_its_comparison_round_trips(tmp_path: Path) -> None:
    outcome = ComparisonOutcome("ok", comparison=make_comparison())
    outcome.write(tmp_path / "o.json")
    assert ComparisonOutcome.read(tmp_path / "o.json") == outcome
    refused = ComparisonOutcome("refused", "only pickle weights")
    refused.write(tmp_path / "r.json")
    assert ComparisonOutcome.read(tmp_path / "r.json") == refused
