"""Token statistics with a real tokenizer (trained here) or a labelled approximation."""

from __future__ import annotations

import subprocess
import sys
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


def test_a_slow_tokenizer_alone_is_refused_with_how_to_save_a_fast_one(
    tmp_path: Path, write_jsonl: WriteRows
) -> None:
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\x04<unk>")  # sentencepiece, no .json
    with pytest.raises(TokenizerNotFound, match=r"no tokenizer\.json .*save_pretrained"):
        validate_file(write_jsonl([{"prompt": "x", "completion": "y"}]), tokenizer=str(tmp_path))


def test_an_unreadable_tokenizer_file_is_refused_naming_it(
    tmp_path: Path, write_jsonl: WriteRows
) -> None:
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 42}')
    with pytest.raises(TokenizerNotFound, match=r"tokenizer\.json: cannot be read as a tokenizer"):
        validate_file(write_jsonl([{"prompt": "x", "completion": "y"}]), tokenizer=str(tmp_path))


def test_counting_with_a_real_tokenizer_needs_no_transformers(
    tmp_path: Path, write_jsonl: WriteRows
) -> None:
    """A plain install has the tokenizers library but not transformers (nor torch)."""
    from fixtures.tiny_training import build_tokenizer

    build_tokenizer(tmp_path / "tok")
    data = write_jsonl([{"prompt": "The cat sat on the mat.", "completion": "A dog."}])
    code = (
        "import sys; sys.modules['transformers'] = None\n"  # any import of it now fails
        "from pathlib import Path\n"
        "from tunewatch.plugins.validate.validate import validate_file\n"
        f"report = validate_file(Path({str(data)!r}), tokenizer={str(tmp_path / 'tok')!r})\n"
        "print(report.prompt_tokens.max)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 0
