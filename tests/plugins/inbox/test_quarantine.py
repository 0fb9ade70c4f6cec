"""Moving failing files aside never overwrites or deletes anything."""

from __future__ import annotations

from pathlib import Path

from tunewatch.plugins.inbox.quarantine import move_aside


def test_a_taken_name_gets_a_suffix_and_nothing_is_overwritten(tmp_path: Path) -> None:
    rejected = tmp_path / "rejected"
    rejected.mkdir()
    (rejected / "bad.jsonl").write_text("older")
    (rejected / "bad-1.jsonl").write_text("old")
    src = tmp_path / "bad.jsonl"
    src.write_text("new")
    moved = move_aside(src, rejected)
    assert moved == rejected / "bad-2.jsonl"
    assert moved.read_text() == "new"
    assert not src.exists()
    assert (rejected / "bad.jsonl").read_text() == "older"
    assert (rejected / "bad-1.jsonl").read_text() == "old"
