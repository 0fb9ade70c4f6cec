"""`tunewatch validate` through the real CLI: reports, scores and exit codes."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import WriteRows


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tunewatch.daemon", "validate", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _good_rows(n: int = 20) -> list[dict[str, str]]:
    return [{"prompt": f"Question number {i}?", "completion": f"Answer {i}."} for i in range(n)]


def test_a_clean_file_passes_with_a_readable_report(write_jsonl: WriteRows) -> None:
    proc = _cli(write_jsonl(_good_rows()))
    assert proc.returncode == 0, proc.stderr
    assert "format: trl_prompt_completion" in proc.stdout
    assert "score: 100/100 -> ready to train" in proc.stdout


def test_a_broken_file_scores_low_and_exits_1_with_examples_and_lines(
    write_jsonl: WriteRows,
) -> None:
    rows: list[object] = [*_good_rows(10), *[{"prompt": "p"} for _ in range(5)]]
    proc = _cli(write_jsonl(rows))
    assert proc.returncode == 1
    assert "missing_field (error):" in proc.stdout
    assert "line 11: required field 'completion' is missing" in proc.stdout
    assert "fix before training" in proc.stdout


def test_min_score_decides_the_exit_code(write_jsonl: WriteRows) -> None:
    path = write_jsonl(_good_rows(5))  # fewer than 10 examples costs 10 points
    assert _cli(path).returncode == 0
    assert _cli(path, "--min-score", "95").returncode == 1


def test_json_output_has_the_score_verdict_and_problems(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    rows = [*_good_rows(), {"prompt": "p", "completion": ""}]
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows, indent=2).encode())
    proc = _cli(path, "--json")
    [report] = json.loads(proc.stdout)
    assert report["examples"] == 21
    assert report["verdict"] in ("ready", "review", "fix")
    assert [(p["category"], p["line"]) for p in report["problems"]] == [
        ("empty_assistant_content", 21)
    ]


@pytest.mark.parametrize(
    "content", [b"", b"\x7fELF\x02\x01\x01\x00\x00\x00\x00" * 100, b"\x00\xff\x00garbage\n"]
)
def test_unreadable_input_exits_2(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    proc = _cli(path)
    assert proc.returncode == 2
    assert "tunewatch validate:" in proc.stderr


def test_a_missing_file_or_a_directory_exits_2(tmp_path: Path) -> None:
    assert _cli(tmp_path / "nope.jsonl").returncode == 2
    assert _cli(tmp_path).returncode == 2


def test_markdown_output_escapes_text_from_the_data(write_jsonl: WriteRows) -> None:
    rows = [
        *_good_rows(),
        {"prompt": "p", "completion": "c", "x": 1},
        {"prompt": "q", "completion": "d", "x": "<b>|"},
    ]
    proc = _cli(write_jsonl(rows), "--markdown")
    assert "| field_type_changed | error | 22 |" in proc.stdout
    assert "<b>" not in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_a_1gb_file_is_validated_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    filler = " ".join(f"word{i}" for i in range(1500))  # ~13 KB of text per row
    with path.open("w") as out:
        for i in range(80_000):
            out.write(
                json.dumps({"prompt": f"row {i} {filler[:6000]}", "completion": f"{i} {filler}"})
                + "\n"
            )
    assert path.stat().st_size > 1 << 30
    proc = _cli(path, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    [report] = json.loads(proc.stdout)
    assert report["examples"] == 80_000
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak_kib < 1 << 20
