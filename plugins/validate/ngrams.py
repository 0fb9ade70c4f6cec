"""Word n-gram hashes with numpy: the inner loop shared by near-duplicate and leakage checks.

Each word is hashed once and n-grams are combined arithmetically (a polynomial rolling hash),
instead of joining and hashing every n-gram string in Python. A `WordBatch` holds the words of
many texts end to end, so a whole chunk of rows costs a handful of numpy calls, not a few per row.
Word hashes come from the words' UTF-8 bytes, not from Python's `hash` (salted per process), so
the same file gets the same near-duplicate groups in every run.
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
# A word's bytes are combined with another odd multiplier, then mixed by murmur3's finaliser,
# so that word hashes are not a linear function of the bytes the n-gram hash combines again.
_BYTE_MULTIPLIER = 0xC2B2AE3D27D4EB4F
_BYTE_INVERSE = pow(_BYTE_MULTIPLIER, -1, 1 << 64)
_FMIX_1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX_2 = np.uint64(0xC4CEB9FE1A85EC53)

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
    return WordBatch(hash_words(" ".join(chain.from_iterable(words))), offsets)


def hash_words(spaced: str) -> Hashes:
    """A 64-bit hash of each word of `spaced`, words separated by exactly one space.

    The hash of bytes b[s:e] is mix(sum(b[j] * K^(j - s))): prefix sums of b[j] * K^j give
    every word's sum at once, and K^-s (K is odd, so invertible mod 2^64) shifts it to start
    at power 0, so a word hashes the same wherever it stands.
    """
    if not spaced:
        return np.zeros(0, dtype=np.uint64)
    data = np.frombuffer(spaced.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    n = len(data)
    powers, inverse = _byte_powers(n + 1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(n + 1, dtype=np.uint64)
        weighted = data.astype(np.uint64)
        weighted += np.uint64(1)  # so that a zero byte still counts
        weighted *= powers[:n]
        np.cumsum(weighted, out=prefix[1:])
        spaces = np.flatnonzero(data == 32)
        starts = np.concatenate(([0], spaces + 1))
        ends = np.concatenate((spaces, [n]))
        x = (prefix[ends] - prefix[starts]) * inverse[starts]
        # murmur3's fmix64: every input bit reaches every output bit.
        x ^= x >> np.uint64(33)
        x *= _FMIX_1
        x ^= x >> np.uint64(33)
        x *= _FMIX_2
        x ^= x >> np.uint64(33)
    return x


def word_hashes(text: str) -> Hashes:
    return word_batch([text]).hashes


_POWER_TABLES: list[tuple[Hashes, Hashes]] = []


def _byte_powers(n: int) -> tuple[Hashes, Hashes]:
    """K^1..K^n and K^-1..K^-n, kept from call to call (a chunk of rows is a few hundred KB)."""
    if _POWER_TABLES and len(_POWER_TABLES[0][0]) >= n:
        return _POWER_TABLES[0]
    size = max(n, 2 * len(_POWER_TABLES[0][0]) if _POWER_TABLES else 1 << 16)
    tables: tuple[Hashes, Hashes] = (
        np.full(size, _BYTE_MULTIPLIER, dtype=np.uint64),
        np.full(size, _BYTE_INVERSE, dtype=np.uint64),
    )
    with np.errstate(over="ignore"):
        for table in tables:
            np.cumprod(table, out=table)
    _POWER_TABLES[:] = [tables]
    return tables


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
