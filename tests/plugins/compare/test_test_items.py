"""Specification of the test items: read from any validator format, judged like SQuAD answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunewatch.plugins.compare.test_items import (
    UnreadableInput,
    is_correct,
    normalise,
    read_test_items,
)


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_prompt_completion_rows_become_pairs_and_rows_without_both_are_skipped(
    tmp_path: Path,
) -> None:
    path = _jsonl(
        tmp_path / "test.jsonl",
        [
            {"prompt": "Q: 2+2? A:", "completion": "4"},
            {"prompt": "Q: capital of France? A:", "completion": ""},  # no reference
            {"prompt": "", "completion": "orphan answer"},  # no prompt
            {"prompt": "Q: 3+4? A:", "completion": "7"},
        ],
    )
    path.write_text(path.read_text() + "{broken json\n")

    assert read_test_items(path) == [("Q: 2+2? A:", "4"), ("Q: 3+4? A:", "7")]


def test_a_json_array_of_chat_rows_is_read_like_the_validator_reads_it(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris"},
            ]
        }
    ]
    path = tmp_path / "test.json"
    path.write_text(json.dumps(rows), encoding="utf-8")

    assert read_test_items(path) == [("Answer briefly.\nCapital of France?", "Paris")]


def test_alpaca_rows_join_instruction_and_input(tmp_path: Path) -> None:
    row = {"instruction": "Translate to French.", "input": "cat", "output": "chat"}

    assert read_test_items(_jsonl(tmp_path / "t.jsonl", [row])) == [
        ("Translate to French.\ncat", "chat")
    ]


def test_a_file_without_any_prompt_and_answer_pair_says_what_it_needs(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "t.jsonl", [{"text": "just pretraining text"}])

    with pytest.raises(UnreadableInput, match=r"no row has both.*format detected: text"):
        read_test_items(path)


def test_a_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInput, match="no such file"):
        read_test_items(tmp_path / "absent.jsonl")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower.", "eiffel tower"),
        ("  an   Apple,\n a day ", "apple day"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # casefold, not lower
        ("«Paris»!", "paris"),  # Unicode punctuation too
        ("theatre", "theatre"),  # articles only as whole words
        ("", ""),
    ],
)
def test_normalise_keeps_only_what_an_answer_means(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    ("output", "reference", "correct"),
    [
        ("Paris", "paris.", True),  # exact after normalising
        ("The answer is Paris, of course.", "Paris", True),  # contained
        ("7\nQ: 1+1? A: 2", "7", True),  # the model went on generating
        ("17", "7", False),  # not inside another word
        ("Lyon", "Paris", False),
        ("", "Paris", False),
        ("anything", "...", False),  # a reference of only punctuation matches only nothing
        ("", "the", True),
    ],
)
def test_is_correct_by_exact_match_or_whole_word_containment(
    output: str, reference: str, correct: bool
) -> None:
    assert is_correct(output, reference) is correct
