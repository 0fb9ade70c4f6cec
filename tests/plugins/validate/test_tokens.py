"""Token statistics with a real tokenizer (trained here) or a labelled approximation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunewatch.plugins.validate.tokens import APPROXIMATE, TokenizerNotFound, resolve_tokenizer
from tunewatch.plugins.validate.validate import validate_file

from .conftest import WriteRows


def test_without_a_tokenizer_counts_are_labelled_approximate(write_jsonl: WriteRows) -> None:
    report = validate_file(write_jsonl([{"prompt": "x" * 40, "completion": "y" * 8}]))
    assert report.tokenizer == APPROXIMATE
    assert report.prompt_tokens is not None and report.prompt_tokens.max == 10
    assert report.answer_tokens is not None and report.answer_tokens.max == 2


def test_a_real_tokenizer_from_the_newest_checkpoint_counts_tokens(
    tmp_path: Path, write_jsonl: WriteRows
) -> None:
    from fixtures.tiny_training import build_tokenizer

    run = tmp_path / "run"
    tokenizer = build_tokenizer(run / "checkpoint-20")
    build_tokenizer(run / "checkpoint-5")
    (run / "checkpoint-30").mkdir()  # no tokenizer files: skipped
    assert resolve_tokenizer(run) == run / "checkpoint-20"

    prompts = ["The cat sat on the mat.", "The quick brown fox jumps over the lazy dog."]
    rows = [{"prompt": p, "completion": "A dog."} for p in prompts]
    report = validate_file(write_jsonl(rows), tokenizer=str(run), max_seq_len=8)
    expected = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert report.tokenizer == str(run / "checkpoint-20")
    assert report.prompt_tokens is not None
    assert (report.prompt_tokens.min, report.prompt_tokens.max) == (min(expected), max(expected))
    answer = len(tokenizer("A dog.", add_special_tokens=False)["input_ids"])
    over = sum(n + answer > 8 for n in expected)
    assert over > 0
    assert report.over_max_seq_len == over


def test_a_directory_without_a_tokenizer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenizerNotFound):
        resolve_tokenizer(tmp_path)
