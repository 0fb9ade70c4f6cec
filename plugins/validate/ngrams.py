"""Word n-gram hashes with numpy: the inner loop shared by near-duplicate and leakage checks.

Each word is hashed once and n-grams are combined arithmetically (a polynomial rolling hash),
instead of joining and hashing every n-gram string in Python. A `WordBatch` holds the words of
many texts end to end, so a whole chunk of rows costs a handful of numpy calls, not a few per row.
Hashes are consistent within one process, which is all the checks need.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+")
# In ASCII, \w is [A-Za-z0-9_]: every other character (the whitespace that str.split() knows
# included) becomes a space, so splitting on whitespace yields exactly the \w+ runs.
_ASCII_NON_WORD_TO_SPACE = str.maketrans(
    {chr(c): " " for c in range(128) if not (chr(c).isalnum() or chr(c) == "_")}
)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplication mod 2^64 loses nothing

FILTER_SLOTS_PER_MEMBER = 16

Hashes = npt.NDArray[np.uint64]
Indices = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class WordBatch:
    """The word hashes of several texts end to end: text i is hashes[offsets[i]:offsets[i+1]]."""

    hashes: Hashes
    offsets: Indices

    def words(self, text: int) -> Hashes:
        return self.hashes[self.offsets[text] : self.offsets[text + 1]]

    def lengths(self) -> Indices:
        return np.diff(self.offsets)

    def pairs(self) -> WordBatch:
        """Texts 2i and 2i+1 joined as text i (a row's prompt and answer as one text)."""
        return WordBatch(self.hashes, self.offsets[::2])


def words_of(text: str) -> list[str]:
    """The lower-cased `\\w+` words of a text."""
    text = text.lower()
    if text.isascii():  # the same words, three times faster than the regex
        return text.translate(_ASCII_NON_WORD_TO_SPACE).split()
    return _WORD.findall(text)


def word_batch(texts: Sequence[str]) -> WordBatch:
    """The lower-cased `\\w+` words of each text, hashed."""
    words = [words_of(text) for text in texts]
    offsets = np.zeros(len(texts) + 1, dtype=np.intp)
    np.cumsum(np.fromiter(map(len, words), dtype=np.intp, count=len(words)), out=offsets[1:])
    total = int(offsets[-1])
    hashed = np.fromiter(map(hash, chain.from_iterable(words)), dtype=np.int64, count=total)
    return WordBatch(hashed.view(np.uint64), offsets)


def word_hashes(text: str) -> Hashes:
    return word_batch([text]).hashes


def _rolling(words: Hashes, n: int) -> Hashes:
    """The hash of every run of n consecutive words (len(words) >= n): the polynomial
    sum(words[i + k] * M^(n - 1 - k)), built from runs of 1, 2, 4, ... words, so it takes
    about 2 log2(n) numpy passes instead of n."""
    result: Hashes | None = None
    done = 0  # words covered by result
    run, size = words, 1  # run: the hashes of every run of `size` words
    while True:
        if n & size:
            if result is None:
                result, done = run, size
            else:  # append a run of `size` words after the `done` ones
                keep = len(words) - done - size + 1
                result = result[:keep] * _power(size) + run[done : done + keep]
                done += size
        if size * 2 > n:
            assert result is not None
            return result
        run = run[:-size] * _power(size) + run[size:]
        size *= 2


def _power(exponent: int) -> np.uint64:
    return np.uint64(pow(int(_MULTIPLIER), exponent, 1 << 64))


def ngram_hashes(words: Hashes, n: int) -> Hashes:
    """The distinct hashes of the word n-grams; a text shorter than n counts as one gram."""
    if len(words) == 0:
        return np.empty(0, dtype=np.uint64)
    return np.unique(_rolling(words, min(n, len(words))))


def batch_ngram_hashes(batch: WordBatch, n: int) -> tuple[Hashes, Indices]:
    """Every word n-gram of every text of at least n words, with the text each belongs to.

    Grams come in text order and are not deduplicated; shorter texts have none here.
    """
    if len(batch.hashes) < n:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.intp)
    grams = _rolling(batch.hashes, n)
    per_text = np.maximum(batch.lengths() - (n - 1), 0)
    owner = np.repeat(np.arange(len(per_text), dtype=np.intp), per_text)
    # The grams of a text start at its first word and stop n-1 words before its end.
    skipped = batch.offsets[:-1] - (np.cumsum(per_text) - per_text)
    return grams[np.arange(len(owner)) + np.repeat(skipped, per_text)], owner


def contained(values: Hashes, sorted_pool: Hashes) -> npt.NDArray[np.bool_]:
    """For each value, whether it is in `sorted_pool` (binary search: no sort per call,
    unlike np.isin, which dominated the validation profile)."""
    if len(sorted_pool) == 0:
        return np.zeros(len(values), dtype=bool)
    index = np.searchsorted(sorted_pool, values)
    index[index == len(sorted_pool)] = 0
    found: npt.NDArray[np.bool_] = sorted_pool[index] == values
    return found


class HashFilter:
    """A flag per hash prefix for a set of hashes: `maybe` never misses a member and admits
    about one other value in FILTER_SLOTS_PER_MEMBER, so that an exact test (a binary search)
    runs on few values. Cheaper than searching every value: one table read each."""

    def __init__(self, members: Hashes) -> None:
        bits = int(np.clip(np.ceil(np.log2(max(len(members), 1) * FILTER_SLOTS_PER_MEMBER)), 8, 26))
        self._shift = np.uint64(64 - bits)
        self._table = np.zeros(1 << bits, dtype=bool)
        self._table[members >> self._shift] = True

    def maybe(self, values: Hashes) -> npt.NDArray[np.bool_]:
        found: npt.NDArray[np.bool_] = self._table[values >> self._shift]
        return found
