"""Leakage: an answer copied from its own prompt, and training rows that overlap a test file.

Short answers are legitimately found in prompts (labels such as "Negative" chosen from a list),
so the self check needs a long answer; the test check uses 13-gram containment (as GPT-3 did).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tunewatch.plugins.validate.duplicates import normalise
from tunewatch.plugins.validate.ngrams import (
    Hashes,
    HashFilter,
    WordBatch,
    batch_ngram_hashes,
    contained,
    ngram_hashes,
    word_hashes,
)

_ROW_TAG = np.uint64(0xD6E8FEB86659FD93)  # odd: distinct rows get distinct offsets
MIN_ANSWER_WORDS = 8  # shorter answers in their prompt are labels, not leaks
SELF_CONTAINMENT = 0.8  # share of the answer's 8-grams found in the prompt
TEST_NGRAM = 13
TEST_CONTAINMENT = 0.5  # share of a test row's 13-grams found in one training row


def _ngrams(text: str, n: int) -> set[int]:
    # A short text counts as one gram, so short test rows can still leak verbatim.
    return set(ngram_hashes(word_hashes(text), n).tolist())


def answer_in_prompt(
    prompt: str, answer: str, words: tuple[Hashes, Hashes] | None = None
) -> float | None:
    """The share of a long answer found in its prompt, when it reaches SELF_CONTAINMENT.

    `words`: the prompt's and the answer's word hashes, when the caller already has them.
    """
    prompt_words, answer_words = words or (word_hashes(prompt), word_hashes(answer))
    if len(answer_words) < MIN_ANSWER_WORDS or not prompt:
        return None
    if normalise(answer) in normalise(prompt):
        return 1.0
    # Cheap first: most of the answer's n-grams cannot be in the prompt if most of its words
    # are not.
    if contained(answer_words, np.sort(prompt_words)).mean() < SELF_CONTAINMENT:
        return None
    grams = ngram_hashes(answer_words, MIN_ANSWER_WORDS)
    prompt_grams = ngram_hashes(prompt_words, MIN_ANSWER_WORDS)  # sorted: np.unique sorts
    shared = float(contained(grams, prompt_grams).mean())
    return shared if shared >= SELF_CONTAINMENT else None


def answers_in_prompts(
    prompts: Sequence[str], answers: Sequence[str], words: WordBatch
) -> list[float | None]:
    """`answer_in_prompt` for each row; `words`: prompt i is text 2i, answer i text 2i+1.

    One vectorised pass over the chunk finds the rows that might leak; only those are checked
    row by row. The pass may only overrate a row (a HashFilter admits some words that are not
    in the prompt), so it never hides a leak the row check would find.
    """
    lengths = words.lengths()
    prompt_lengths, answer_lengths = lengths[0::2], lengths[1::2]
    rows = np.arange(len(prompts), dtype=np.uint64)
    with np.errstate(over="ignore"):  # tag each word with its row: equal only within a row
        tagged = words.hashes + np.repeat(np.repeat(rows, 2) * _ROW_TAG, lengths)
    in_prompt = np.repeat(np.arange(len(lengths)) % 2 == 0, lengths)
    found = HashFilter(tagged[in_prompt]).maybe(tagged[~in_prompt])
    answer_rows = np.repeat(np.arange(len(prompts)), answer_lengths)
    matched = np.bincount(answer_rows, weights=found, minlength=len(prompts))
    # As answer_in_prompt computes it, and a verbatim copy may miss its first and last word
    # (cut mid-word), never more.
    share = matched / np.maximum(answer_lengths, 1)
    may_leak = (answer_lengths >= MIN_ANSWER_WORDS) & (prompt_lengths > 0)
    may_leak &= (share >= SELF_CONTAINMENT) | (matched >= answer_lengths - 2)
    shares: list[float | None] = [None] * len(prompts)
    for row in np.flatnonzero(may_leak).tolist():
        pair = (words.words(2 * row), words.words(2 * row + 1))
        shares[row] = answer_in_prompt(prompts[row], answers[row], pair)
    return shares


@dataclass(frozen=True, slots=True)
class HeldOutLeak:
    """One training row that contains (most of) some test rows."""

    test_lines: tuple[int, ...]
    containment: float


class HeldOutIndex:
    """The 13-grams of every row of a test file, to look training rows up against."""

    def __init__(self) -> None:
        self._owners: dict[int, list[int]] = {}
        self._sizes: dict[int, int] = {}
        self._known: npt.NDArray[np.uint64] | None = None  # every test gram, sorted
        self._filter: HashFilter | None = None
        self.rows = 0

    def add(self, line: int, text: str) -> None:
        grams = _ngrams(text, TEST_NGRAM)
        if not grams:
            return
        self.rows += 1
        self._known = self._filter = None
        self._sizes[line] = len(grams)
        for gram in grams:
            self._owners.setdefault(gram, []).append(line)

    def leaks(self, words: WordBatch) -> list[HeldOutLeak | None]:
        """For each text of `words`, the test rows it contains at least TEST_CONTAINMENT of."""
        found: list[HeldOutLeak | None] = [None] * (len(words.offsets) - 1)
        if not self._owners:
            return found
        if self._known is None or self._filter is None:
            self._known = np.array(sorted(self._owners), dtype=np.uint64)
            self._filter = HashFilter(self._known)
        grams, owner = batch_ngram_hashes(words, TEST_NGRAM)
        # Almost no training gram is a test gram: the filter rules most out, a search the rest.
        hit = self._filter.maybe(grams)
        hit[hit] = contained(grams[hit], self._known)
        rows, starts = np.unique(owner[hit], return_index=True)
        parts = np.split(grams[hit], starts[1:]) if len(rows) else []
        shared = dict(zip(rows.tolist(), parts, strict=True))
        lengths = words.lengths()
        for row in np.flatnonzero((lengths > 0) & (lengths < TEST_NGRAM)).tolist():
            gram = ngram_hashes(words.words(row), TEST_NGRAM)  # a short text is one gram
            if contained(gram, self._known)[0]:
                shared[row] = gram
        for row, row_grams in shared.items():
            found[row] = self._leak(np.unique(row_grams))
        return found

    def _leak(self, shared: Hashes) -> HeldOutLeak | None:
        """The test rows that the distinct grams `shared` cover enough of, if any."""
        hits: dict[int, int] = {}
        for gram in shared.tolist():
            for line in self._owners.get(gram, ()):
                hits[line] = hits.get(line, 0) + 1
        leaked = {line: n / self._sizes[line] for line, n in hits.items()}
        leaked = {line: c for line, c in leaked.items() if c >= TEST_CONTAINMENT}
        if not leaked:
            return None
        return HeldOutLeak(tuple(sorted(leaked)), max(leaked.values()))
