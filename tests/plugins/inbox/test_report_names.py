"""Report names: the data file's full name, readable, and never a report that is already there."""

from __future__ import annotations

from pathlib import Path

from tunewatch.plugins.inbox.report_names import claim_report_paths, report_base

STAMP = "20261201-101500"


def test_the_extension_keeps_reports_of_same_stem_files_apart() -> None:
    assert report_base("dup.json", STAMP) == "dup.json-20261201-101500"
    assert report_base("dup.jsonl", STAMP) == "dup.jsonl-20261201-101500"


def test_control_characters_become_underscores_and_long_names_are_cut() -> None:
    assert report_base("x\n<img>\t\u202e.jsonl", STAMP) == f"x_<img>__.jsonl-{STAMP}"
    long_name = "é" * 124 + ".jsonl"  # 254 bytes: a stamp and a suffix would pass NAME_MAX
    base = report_base(long_name, STAMP)
    assert len(f".{base}-99.json.abcdefgh.tmp".encode()) <= 255  # write_atomic's temp name too
    assert base.startswith("éé") and base.endswith(STAMP)


def test_a_taken_name_gets_the_next_suffix_and_no_report_is_overwritten(tmp_path: Path) -> None:
    base = report_base("dup.jsonl", STAMP)
    (tmp_path / f"{base}.md").write_text("first report")
    (tmp_path / f"{base}-2.json").write_text("someone's json")  # half a pair is taken too
    assert claim_report_paths(tmp_path, base) == (
        tmp_path / f"{base}-3.md",
        tmp_path / f"{base}-3.json",
    )
    assert (tmp_path / f"{base}.md").read_text() == "first report"
    assert (tmp_path / f"{base}-2.json").read_text() == "someone's json"
    assert not (tmp_path / f"{base}-2.md").exists()  # no claim left behind
    # The claimed names are taken now: the next validation gets another pair.
    assert claim_report_paths(tmp_path, base)[0] == tmp_path / f"{base}-4.md"
