"""Duplicates (exact and near) and leakage (answer in prompt, overlap with a test file)."""

from __future__ import annotations

import random

from tunewatch.plugins.validate.validate import validate_file

from .conftest import WriteRows

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


def _sentence(rng: random.Random, n: int = 40) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(n))


def test_exact_duplicates_ignore_case_and_whitespace(write_jsonl: WriteRows) -> None:
    rows = [
        {"prompt": "What is 2+2?", "completion": "4"},
        {"prompt": "Name a colour.", "completion": "Blue"},
        {"prompt": "what is  2+2?", "completion": "4"},
    ]
    report = validate_file(write_jsonl(rows))
    assert report.duplicate_groups == ((1, 3),)


def test_near_duplicates_are_grouped_with_their_lines(write_jsonl: WriteRows) -> None:
    rng = random.Random(0)
    base = _sentence(rng, 200)
    edited = base.split()
    edited[100] = "changed"  # one word in 200: Jaccard of 5-gram shingles ~0.95
    rows = [{"text": _sentence(rng)} for _ in range(6)]
    rows[1] = {"text": base}
    rows[4] = {"text": " ".join(edited)}
    report = validate_file(write_jsonl(rows))
    assert report.near_duplicate_groups == ((2, 5),)
    assert report.duplicate_groups == ()


def test_answer_copied_from_a_long_prompt_is_flagged_but_a_short_label_is_not(
    write_jsonl: WriteRows,
) -> None:
    copied = "The quick brown fox jumps over the lazy dog near the river bank today."
    rows = [
        {"instruction": "Classify: Positive or Negative? I hated it.", "output": "Negative"},
        {"instruction": "Repeat this.", "input": copied, "output": copied},
    ]
    problems = validate_file(write_jsonl(rows)).problems
    assert [(p.category, p.line) for p in problems] == [("answer_in_prompt", 2)]


def test_training_rows_that_contain_test_rows_are_named(write_jsonl: WriteRows) -> None:
    rng = random.Random(1)
    test_rows = [{"question": _sentence(rng, 20), "answer": _sentence(rng, 10)} for _ in range(3)]
    train = [{"question": _sentence(rng, 20), "answer": _sentence(rng, 10)} for _ in range(4)]
    train[2] = dict(test_rows[1])
    test_file = write_jsonl(test_rows, "test.jsonl")
    report = validate_file(write_jsonl(train), test_file=test_file)
    leaks = [p for p in report.problems if p.category == "test_leakage"]
    assert [(p.line, p.level) for p in leaks] == [(3, "error")]
    assert "test row(s) 2" in leaks[0].message


def test_contained_agrees_with_numpy_isin() -> None:
    import numpy as np

    from tunewatch.plugins.validate.ngrams import contained

    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 300):
        pool = np.unique(rng.integers(0, 50, size, dtype=np.uint64))
        values = rng.integers(0, 60, 200, dtype=np.uint64)
        assert (contained(values, pool) == np.isin(values, pool)).all()
