"""Word n-gram hashes of a batch of texts: the same as each text hashed on its own."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tunewatch.plugins.validate.ngrams import (
    HashFilter,
    batch_ngram_hashes,
    hash_words,
    ngram_hashes,
    word_batch,
    word_hashes,
    words_of,
)

MASK64 = (1 << 64) - 1
MULTIPLIER = 0x9E3779B97F4A7C15


def _texts(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    words = ["Alpha", "beta", "gamma", "delta", "épsilon", "zeta_2", "eta", "theta"]
    return [" ".join(rng.choice(words) for _ in range(rng.randrange(0, 30))) for _ in range(count)]


def _grams_by_definition(words: list[int], n: int) -> list[int]:
    """sum(words[i + k] * M^(n - 1 - k)) mod 2^64 for every window, in plain integers."""
    grams = []
    for start in range(len(words) - n + 1):
        value = 0
        for word in words[start : start + n]:
            value = (value * MULTIPLIER + word) & MASK64
        grams.append(value)
    return grams


@given(st.text(st.characters(max_codepoint=127)) | st.text())
def test_words_are_the_regex_word_runs_of_the_lower_cased_text(text: str) -> None:
    assert words_of(text) == re.findall(r"\w+", text.lower())


def test_a_batch_holds_each_texts_words() -> None:
    texts = _texts(0, 50)
    batch = word_batch(texts)
    for index, text in enumerate(texts):
        assert batch.words(index).tolist() == word_hashes(text).tolist()
    assert batch.pairs().words(3).tolist() == word_hashes(f"{texts[6]}\n{texts[7]}").tolist()


def test_batch_ngrams_are_each_long_enough_texts_own_ngrams() -> None:
    texts = _texts(1, 80)
    batch = word_batch(texts)
    for n in (1, 2, 5, 8, 13):
        grams, owner = batch_ngram_hashes(batch, n)
        for index in range(len(texts)):
            words = batch.words(index).tolist()
            expected = _grams_by_definition(words, n)
            assert grams[owner == index].tolist() == expected
            if words:
                assert ngram_hashes(batch.words(index), n).tolist() == sorted(
                    set(expected or _grams_by_definition(words, len(words)))
                )


def test_a_hash_filter_never_misses_a_member_and_admits_few_others() -> None:
    rng = np.random.default_rng(2)
    members = rng.integers(0, 2**64 - 1, 5000, dtype=np.uint64)
    others = rng.integers(0, 2**64 - 1, 100_000, dtype=np.uint64)
    table = HashFilter(members)
    assert table.maybe(members).all()
    assert table.maybe(others).mean() < 0.1


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=["Zs", "Cc"]), min_size=1)))
def test_a_word_hashes_the_same_wherever_it_stands(words: list[str]) -> None:
    words = [w for w in words if " " not in w]
    hashed = hash_words(" ".join(words)).tolist()
    assert len(hashed) == len(words)
    by_word: dict[str, int] = {}
    for word, value in zip(words, hashed, strict=True):
        assert by_word.setdefault(word, value) == value
    assert len(set(by_word.values())) == len(by_word)  # 64-bit: no collision among a few words


def test_word_hashes_do_not_depend_on_the_process() -> None:
    """Python's str hash is salted per process; these must not be, or near-duplicate groups
    (MinHash over word n-grams) would change from one run of `tunewatch validate` to the next."""
    code = (
        "from tunewatch.plugins.validate.ngrams import word_batch;"
        "print(word_batch(['Hello, world!', 'héllo again']).hashes.tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
