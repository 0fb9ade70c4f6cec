"""Exact duplicates (after normalising case and whitespace) and near-duplicates by MinHash LSH.

Memory per row is fixed: an 8-byte digest, NUM_PERM 32-bit minhashes and BANDS band hashes, all
in numpy arrays; candidate pairs are found at the end by sorting each band, not with big dicts.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from tunewatch.plugins.validate.ngrams import Indices, WordBatch, batch_ngram_hashes

NUM_PERM = 64
BANDS = 16  # 16 bands of 4 rows: candidates from Jaccard ~0.5, then verified on the signature
ROWS_PER_BAND = NUM_PERM // BANDS
SHINGLE_WORDS = 5
PAIR_BLOCK = 1 << 16  # candidate pairs compared at once: a 16 MiB temporary
SIGNATURE_BLOCK = 8192  # shingles hashed at once: a 4 MiB temporary
_MASK32 = np.uint64(0xFFFFFFFF)


def normalise(text: str) -> str:
    """Lower case with whitespace runs collapsed: what 'the same text' means here."""
    return " ".join(text.lower().split())


def row_digest(row: Any) -> bytes:
    """8 bytes, the same for rows that differ only in key order, case and whitespace runs."""
    try:
        text = orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits, valid JSON that orjson cannot write back
        compact = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        text = compact.encode("utf-8", "surrogatepass")
    if text.isascii():
        # What normalise() does, on bytes: JSON escapes control characters, so the only
        # whitespace here is the space that bytes.split() and str.split() both know.
        normalised = b" ".join(text.lower().split())
    else:
        normalised = normalise(text.decode()).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(normalised, digest_size=8).digest()


class _Growing:
    """A 2-D numpy array that grows by doubling, so appends stay amortised O(1) per row."""

    def __init__(self, width: int, dtype: type[np.generic]) -> None:
        self.data: npt.NDArray[np.generic] = np.zeros((1024, width), dtype=dtype)
        self.size = 0

    def extend(self, rows: npt.NDArray[np.generic]) -> None:
        while self.size + len(rows) > len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.size : self.size + len(rows)] = rows
        self.size += len(rows)

    def view(self) -> npt.NDArray[np.generic]:
        return self.data[: self.size]


class DuplicateFinder:
    """Feed chunks of rows; `exact_groups` and `near_groups` give the line numbers."""

    def __init__(self, *, threshold: float = 0.8, near: bool = True, seed: int = 1) -> None:
        self.threshold = threshold
        self.near = near
        rng = np.random.default_rng(seed)
        # Multiply-shift hashing: ((a*x + b) mod 2^64) >> 32 with odd a is a universal family.
        self._a = rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)
        self._exact: dict[bytes, list[int]] = {}
        self._lines: list[int] = []  # line of each MinHash row
        self._signatures = _Growing(NUM_PERM, np.uint32)

    def add_batch(self, lines: Sequence[int], rows: Sequence[Any], words: WordBatch) -> None:
        """Rows in order: the `rows` (decoded JSON) decide exact copies; `words` (one text per
        row, its prose) near ones."""
        pairs = zip(lines, rows, strict=True)
        first = [index for index, pair in enumerate(pairs) if self._first(*pair)]
        if not self.near or not first:
            return
        # An exact copy is reported as such, not again as a near-duplicate.
        only = np.zeros(len(lines), dtype=bool)
        only[first] = True
        kept, signatures = self.signatures(words, only)
        self._lines.extend(lines[index] for index in kept.tolist())
        self._signatures.extend(signatures)

    def _first(self, line: int, row: Any) -> bool:
        key = row_digest(row)
        seen = self._exact.get(key)
        if seen is not None:
            seen.append(line)
            return False
        self._exact[key] = [line]
        return True

    def signatures(
        self, words: WordBatch, only: npt.NDArray[np.bool_] | None = None
    ) -> tuple[Indices, npt.NDArray[np.uint32]]:
        """MinHash of the word 5-gram shingles of each text of `words` long enough to have one
        (and in `only`, if given): those texts' indices, and a signature row for each."""
        grams, owner = batch_ngram_hashes(words, SHINGLE_WORDS)
        if only is not None:
            grams, owner = grams[only[owner]], owner[only[owner]]
        if len(grams) == 0:
            return owner, np.empty((0, NUM_PERM), dtype=np.uint32)
        group = np.concatenate([[0], np.cumsum(owner[1:] != owner[:-1])])
        minimum = np.full((NUM_PERM, int(group[-1]) + 1), np.iinfo(np.uint64).max, np.uint64)
        x = grams & _MASK32
        # Permutations by shingles, so each row's minimum is a reduction over contiguous memory;
        # blocks of shingles bound the temporary, even for huge rows.
        hashed = np.empty((NUM_PERM, min(len(x), SIGNATURE_BLOCK)), dtype=np.uint64)
        for low in range(0, len(x), SIGNATURE_BLOCK):
            block = x[low : low + SIGNATURE_BLOCK]
            part = hashed[:, : len(block)]
            np.multiply(self._a[:, None], block[None, :], out=part)
            part += self._b[:, None]  # the >> 32 comes after the minimum: shifting keeps order
            groups = group[low : low + SIGNATURE_BLOCK]
            cuts = np.flatnonzero(np.concatenate([[True], groups[1:] != groups[:-1]]))
            targets = groups[cuts]
            reduced = np.minimum.reduceat(part, cuts, axis=1)
            minimum[:, targets] = np.minimum(minimum[:, targets], reduced)
        minimum >>= np.uint64(32)
        return np.unique(owner), minimum.T.astype(np.uint32)

    def exact_groups(self) -> list[tuple[int, ...]]:
        return sorted(tuple(lines) for lines in self._exact.values() if len(lines) > 1)

    def near_groups(self) -> list[tuple[int, ...]]:
        """Groups of lines whose estimated Jaccard similarity reaches the threshold."""
        sigs = self._signatures.view()
        if len(sigs) < 2:
            return []
        members, leaders = self._similar_pairs(sigs)
        parent = list(range(len(sigs)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for member, leader in zip(members.tolist(), leaders.tolist(), strict=True):
            parent[find(member)] = find(leader)
        groups: defaultdict[int, list[int]] = defaultdict(list)
        for index in range(len(sigs)):
            groups[find(index)].append(self._lines[index])
        return sorted(tuple(sorted(g)) for g in groups.values() if len(g) > 1)

    def _similar_pairs(self, sigs: npt.NDArray[np.generic]) -> tuple[Indices, Indices]:
        """(member, leader) rows that share a band and reach the threshold, each pair once.

        Each member of a band bucket is compared with the bucket's first row only: linear, and
        other bands and the grouping's transitivity cover most of what all pairs would add.
        """
        found: list[Indices] = []
        everyone = np.arange(len(sigs))
        for band in range(BANDS):
            columns = np.ascontiguousarray(
                sigs[:, band * ROWS_PER_BAND : (band + 1) * ROWS_PER_BAND]
            )
            keys = columns.view(np.uint64)  # a band's 4 minhashes as two 64-bit keys
            order = np.lexsort(keys.T[::-1])  # stable: a bucket's rows in line order
            ordered = keys[order]
            first = np.concatenate([[True], (ordered[1:] != ordered[:-1]).any(axis=1)])
            leaders = order[np.maximum.accumulate(np.where(first, everyone, 0))][~first]
            members = order[~first]
            for low in range(0, len(members), PAIR_BLOCK):
                pair = slice(low, low + PAIR_BLOCK)
                similarity = (sigs[members[pair]] == sigs[leaders[pair]]).mean(axis=1)
                close = similarity >= self.threshold
                found.append(members[pair][close] * len(sigs) + leaders[pair][close])
        pairs = np.unique(np.concatenate(found)) if found else np.empty(0, dtype=np.intp)
        return pairs // len(sigs), pairs % len(sigs)

    @property
    def surplus_exact(self) -> int:
        """Rows that could be removed: all but one of each exact group."""
        return sum(len(lines) - 1 for lines in self._exact.values())
