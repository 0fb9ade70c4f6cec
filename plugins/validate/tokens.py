"""Token counts: a real tokenizer (the `tokenizers` library, imported lazily) or a labelled
chars/4 estimate.

The real one is read from a fast tokenizer's `tokenizer.json`, as transformers itself does, with
no model code to run and without transformers: a plain install counts exactly. Only
`load_counter` with a path imports `tokenizers`; the daemon itself never does.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tunewatch.plugins.validate.report import TokenStats

APPROXIMATE = "approximate (no tokenizer): characters / 4"
TOKENIZER_FILE = "tokenizer.json"
# What a tokenizer saved without its fast form leaves: named in the error, to say what to do.
SLOW_TOKENIZER_FILES = ("tokenizer.model", "vocab.json", "tokenizer_config.json")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class TokenizerNotFound(Exception):
    """The given path holds no usable tokenizer, nor any checkpoint-N/ that does."""


class TokenCounter(Protocol):
    name: str

    def count(self, texts: Sequence[str]) -> list[int]: ...


class ApproximateCounter:
    """About four characters per token for English text: a rough guide, labelled as such."""

    name = APPROXIMATE

    def count(self, texts: Sequence[str]) -> list[int]:
        return [math.ceil(len(text) / 4) for text in texts]


class FastTokenizerCounter:
    """A saved fast tokenizer (`tokenizer.json`), encoded in Rust on all cores."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self.name = str(directory)
        path = directory / TOKENIZER_FILE
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises a bare Exception for a file it cannot use
            raise TokenizerNotFound(f"{path}: cannot be read as a tokenizer: {exc}") from exc
        # Counting must not pad or truncate, whatever the saved tokenizer says.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        # Only the lengths are read: encode_batch_fast (tokenizers >= 0.21) skips the offsets.
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        return [len(e) for e in encode(list(texts), add_special_tokens=False)]


def has_tokenizer(directory: Path) -> bool:
    return (directory / TOKENIZER_FILE).is_file()


def resolve_tokenizer(path: Path) -> Path:
    """`path` itself if it holds a tokenizer, else its newest checkpoint-N/ that does."""
    if path.is_dir() and has_tokenizer(path):
        return path
    if not path.is_dir():
        raise TokenizerNotFound(f"{path}: not a directory")
    checkpoints = sorted(
        (int(m.group(1)), child)
        for child in path.iterdir()
        if (m := _CHECKPOINT.match(child.name)) and child.is_dir() and has_tokenizer(child)
    )
    if checkpoints:
        return checkpoints[-1][1]
    if any((path / name).is_file() for name in SLOW_TOKENIZER_FILES):
        raise TokenizerNotFound(
            f"{path}: no {TOKENIZER_FILE} (only a slow tokenizer's files); write one with "
            f"AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR) in transformers"
        )
    raise TokenizerNotFound(f"{path}: no {TOKENIZER_FILE}, nor a checkpoint-N/ with one")


def load_counter(path: str | None) -> TokenCounter:
    if path is None:
        return ApproximateCounter()
    return FastTokenizerCounter(resolve_tokenizer(Path(path)))


HISTOGRAM_BOUNDS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class TokenTally:
    """Token counts of one side over all rows: 4 bytes a row, for exact percentiles."""

    def __init__(self) -> None:
        self._counts = array("I")

    def extend(self, counts: Sequence[int]) -> None:
        self._counts.extend(counts)

    def stats(self) -> TokenStats | None:
        if not self._counts:
            return None
        ordered = sorted(self._counts)
        n = len(ordered)
        histogram: list[tuple[int, int]] = []
        index = 0
        for bound in (*HISTOGRAM_BOUNDS, max(ordered[-1], HISTOGRAM_BOUNDS[-1] + 1)):
            start = index
            while index < n and ordered[index] <= bound:
                index += 1
            histogram.append((bound, index - start))
        while histogram and histogram[-1][1] == 0:
            histogram.pop()
        return TokenStats(
            min=ordered[0],
            mean=sum(ordered) / n,
            p50=ordered[(n - 1) // 2],
            p95=ordered[min(n - 1, math.ceil(0.95 * n) - 1)],
            max=ordered[-1],
            histogram=tuple(histogram),
        )
