"""Word n-gram hashes with numpy: the inner loop shared by near-duplicate and leakage checks.

Each word is hashed once and n-grams are combined arithmetically (a polynomial rolling hash),
instead of joining and hashing every n-gram string in Python: several times faster on long rows.
Hashes are consistent within one process, which is all the checks need.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+")
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplication mod 2^64 loses nothing

Hashes = npt.NDArray[np.uint64]


def word_hashes(text: str) -> Hashes:
    words = _WORD.findall(text.lower())
    return np.fromiter(map(hash, words), dtype=np.int64, count=len(words)).view(np.uint64)


def ngram_hashes(words: Hashes, n: int) -> Hashes:
    """The distinct hashes of the word n-grams; a text shorter than n counts as one gram."""
    if len(words) == 0:
        return np.empty(0, dtype=np.uint64)
    if len(words) < n:
        n = len(words)
    count = len(words) - n + 1
    combined = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            combined = combined * _MULTIPLIER + words[k : k + count]
    return np.unique(combined)


def contained(values: Hashes, sorted_pool: Hashes) -> npt.NDArray[np.bool_]:
    """For each value, whether it is in `sorted_pool` (binary search: no sort per call,
    unlike np.isin, which dominated the validation profile)."""
    if len(sorted_pool) == 0:
        return np.zeros(len(values), dtype=bool)
    index = np.searchsorted(sorted_pool, values)
    index[index == len(sorted_pool)] = 0
    found: npt.NDArray[np.bool_] = sorted_pool[index] == values
    return found
