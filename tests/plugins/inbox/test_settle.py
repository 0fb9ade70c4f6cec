"""Settling and temp names: a file still being written is never picked up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewatch.plugins.inbox.settle import SettleTracker, is_candidate


@pytest.mark.parametrize(
    ("name", "candidate"),
    [
        ("my_data.jsonl", True),
        ("train.json", True),
        ("my_data.jsonl.part", False),
        ("big.json.crdownload", False),
        (".~lock.data.jsonl#", False),
        (".hidden.jsonl", False),
        ("data.jsonl~", False),
        ("upload.tmp", False),
    ],
)
def test_temp_and_hidden_names_are_ignored(name: str, candidate: bool) -> None:
    assert is_candidate(Path("/inbox") / name) is candidate


def test_a_file_is_ready_only_after_it_stopped_changing_for_the_settle_period() -> None:
    tracker = SettleTracker(settle_s=3.0)
    path = Path("/inbox/data.jsonl")
    assert not tracker.observe(path, 100, 1, now=0.0)
    assert not tracker.observe(path, 200, 2, now=2.0)  # still growing
    assert not tracker.observe(path, 200, 2, now=4.0)  # stable for 2 s only
    assert tracker.observe(path, 200, 2, now=5.0)
    tracker.forget(path)
    assert not tracker.pending()
