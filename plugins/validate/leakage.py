"""Leakage: an answer copied from its own prompt, and training rows that overlap a test file.

Short answers are legitimately found in prompts (labels such as "Negative" chosen from a list),
so the self check needs a long answer; the test check uses 13-gram containment (as GPT-3 did).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tunewatch.plugins.validate.duplicates import normalise
from tunewatch.plugins.validate.ngrams import Hashes, contained, ngram_hashes, word_hashes

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
        self.rows = 0

    def add(self, line: int, text: str) -> None:
        grams = _ngrams(text, TEST_NGRAM)
        if not grams:
            return
        self.rows += 1
        self._known = None
        self._sizes[line] = len(grams)
        for gram in grams:
            self._owners.setdefault(gram, []).append(line)

    def leak(self, text: str, words: Hashes | None = None) -> HeldOutLeak | None:
        """Which test rows `text` contains at least TEST_CONTAINMENT of, if any."""
        if not self._owners:
            return None
        if self._known is None:
            self._known = np.array(sorted(self._owners), dtype=np.uint64)
        grams = ngram_hashes(word_hashes(text) if words is None else words, TEST_NGRAM)
        # Almost no training gram is a test gram: find the few that are in one vectorised pass.
        shared = grams[contained(grams, self._known)]
        hits: dict[int, int] = {}
        for gram in shared.tolist():
            for line in self._owners.get(gram, ()):
                hits[line] = hits.get(line, 0) + 1
        leaked = {line: n / self._sizes[line] for line, n in hits.items()}
        leaked = {line: c for line, c in leaked.items() if c >= TEST_CONTAINMENT}
        if not leaked:
            return None
        return HeldOutLeak(tuple(sorted(leaked)), max(leaked.values()))
