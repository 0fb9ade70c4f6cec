"""Token counts: a real tokenizer (transformers, imported lazily) or a labelled chars/4 estimate.

The daemon must never import transformers, so only `load_counter` with a path does, inside it.
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
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class TokenizerNotFound(Exception):
    """The given path holds no tokenizer, nor any checkpoint-N/ that does."""


class TokenCounter(Protocol):
    name: str

    def count(self, texts: Sequence[str]) -> list[int]: ...


class ApproximateCounter:
    """About four characters per token for English text: a rough guide, labelled as such."""

    name = APPROXIMATE

    def count(self, texts: Sequence[str]) -> list[int]:
        return [math.ceil(len(text) / 4) for text in texts]


class HFCounter:
    """A transformers tokenizer, loaded from a local directory without remote code."""

    def __init__(self, directory: Path) -> None:
        from transformers import AutoTokenizer

        self.name = str(directory)
        # trust_remote_code stays at its default (False): data files must not run code.
        self._tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        self._backend = getattr(self._tokenizer, "backend_tokenizer", None)
        if self._backend is not None:
            # Counting must not pad or truncate, whatever the saved tokenizer says.
            self._backend.no_truncation()
            self._backend.no_padding()

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        backend = self._backend
        if backend is not None:
            # A fast tokenizer: encode the batch in Rust (on all cores, without holding the
            # GIL) and read only the lengths; encode_batch_fast (tokenizers >= 0.21) also
            # skips the offsets, which counting does not need.
            encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
            return [len(e) for e in encode(list(texts), add_special_tokens=False)]
        encoded = self._tokenizer(
            list(texts), add_special_tokens=False, padding=False, truncation=False
        )
        return [len(ids) for ids in encoded["input_ids"]]


def has_tokenizer(directory: Path) -> bool:
    return any((directory / name).is_file() for name in TOKENIZER_FILES)


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
    if not checkpoints:
        raise TokenizerNotFound(f"{path}: no tokenizer files, nor a checkpoint-N/ with them")
    return checkpoints[-1][1]


def load_counter(path: str | None) -> TokenCounter:
    if path is None:
        return ApproximateCounter()
    return HFCounter(resolve_tokenizer(Path(path)))


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
