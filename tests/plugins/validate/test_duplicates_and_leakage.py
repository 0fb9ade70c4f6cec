"""Duplicates (exact and near) and leakage (answer in prompt, overlap with a test file)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tunewatch.plugins.validate.validate import validate_file

from .conftest import WriteRows

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]


def _sentence(rng: random.Random, n: int = 40) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(1000)) for _ in range(n))


def test_exact_duplicates_ignore_case_and_whitespace(write_jsonl: WriteRows) -> None:
    rows = [
        {"prompt": "What is 2+2?", "completion": "4"},
        {"prompt": "Name a colour.", "completion": "Blue"},
        {"prompt": "what is  2+2?", "completion": "4"},
    ]
    report = validate_file(write_jsonl(rows))
    assert report.duplicate_groups == ((1, 3),)


ascii_or_any_text = st.text(st.characters(max_codepoint=127)) | st.text()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | ascii_or_any_text,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(ascii_or_any_text, inner, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_a_rows_digest_is_that_of_its_normalised_sorted_json(row: object) -> None:
    import hashlib

    import orjson

    from tunewatch.plugins.validate.duplicates import normalise, row_digest

    text = orjson.dumps(row, option=orjson.OPT_SORT_KEYS).decode()
    normalised = normalise(text).encode("utf-8", "surrogatepass")
    assert row_digest(row) == hashlib.blake2b(normalised, digest_size=8).digest()


def test_integers_beyond_64_bits_are_data_like_any_other(tmp_path: Path) -> None:
    """orjson cannot write them back; the duplicate check must still digest such rows."""
    big = 123456789012345678901234567890
    rows = [{"prompt": f"Is {big} even?", "completion": "Yes", "id": big + i % 2} for i in range(3)]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows), encoding="utf-8")  # a JSON array, parsed with big ints
    report = validate_file(path)
    assert report.examples == 3
    assert report.duplicate_groups == ((1, 3),)


def test_near_duplicates_are_grouped_with_their_lines(write_jsonl: WriteRows) -> None:
    rng = random.Random(0)
    base = _sentence(rng, 200)
    edited = base.split()
    edited[100] = "changed"  # one word in 200: Jaccard of 5-gram shingles ~0.95
    rows = [{"text": _sentence(rng)} for _ in range(6)]
    rows[1] = {"text": base}
    rows[4] = {"text": " ".join(edited)}
    report = validate_file(write_jsonl(rows))
    assert report.near_duplicate_groups == ((2, 5),)
    assert report.duplicate_groups == ()


def test_answer_copied_from_a_long_prompt_is_flagged_but_a_short_label_is_not(
    write_jsonl: WriteRows,
) -> None:
    copied = "The quick brown fox jumps over the lazy dog near the river bank today."
    rows = [
        {"instruction": "Classify: Positive or Negative? I hated it.", "output": "Negative"},
        {"instruction": "Repeat this.", "input": copied, "output": copied},
    ]
    problems = validate_file(write_jsonl(rows)).problems
    assert [(p.category, p.line) for p in problems] == [("answer_in_prompt", 2)]


def test_training_rows_that_contain_test_rows_are_named(write_jsonl: WriteRows) -> None:
    rng = random.Random(1)
    test_rows = [{"question": _sentence(rng, 20), "answer": _sentence(rng, 10)} for _ in range(3)]
    train = [{"question": _sentence(rng, 20), "answer": _sentence(rng, 10)} for _ in range(4)]
    train[2] = dict(test_rows[1])
    test_file = write_jsonl(test_rows, "test.jsonl")
    report = validate_file(write_jsonl(train), test_file=test_file)
    leaks = [p for p in report.problems if p.category == "test_leakage"]
    assert [(p.line, p.level) for p in leaks] == [(3, "error")]
    assert "test row(s) 2" in leaks[0].message


def test_contained_agrees_with_numpy_isin() -> None:
    import numpy as np

    from tunewatch.plugins.validate.ngrams import contained

    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 300):
        pool = np.unique(rng.integers(0, 50, size, dtype=np.uint64))
        values = rng.integers(0, 60, 200, dtype=np.uint64)
        assert (contained(values, pool) == np.isin(values, pool)).all()


def test_near_duplicates_far_apart_in_a_long_file_are_grouped(write_jsonl: WriteRows) -> None:
    rng = random.Random(2)
    rows = [{"text": _sentence(rng)} for _ in range(1500)]  # several chunks of rows
    rows[1400] = {"text": rows[3]["text"].replace(" ", "  ").upper() + " more"}
    report = validate_file(write_jsonl(rows))
    assert report.near_duplicate_groups == ((4, 1401),)


def test_signatures_do_not_depend_on_the_batch() -> None:
    from tunewatch.plugins.validate.duplicates import SIGNATURE_BLOCK, DuplicateFinder
    from tunewatch.plugins.validate.ngrams import word_batch

    rng = random.Random(3)
    texts = [_sentence(rng, rng.randrange(0, 60)) for _ in range(40)]
    texts[7] = _sentence(rng, SIGNATURE_BLOCK + 500)  # spans two blocks of shingles
    finder = DuplicateFinder()
    rows, signatures = finder.signatures(word_batch(texts))
    assert rows.tolist() == [i for i, text in enumerate(texts) if len(text.split()) >= 5]
    for row, signature in zip(rows.tolist(), signatures, strict=True):
        [alone] = finder.signatures(word_batch([texts[row]]))[1]
        assert (alone == signature).all()


def test_answers_in_prompts_agrees_with_the_row_by_row_check() -> None:
    from tunewatch.plugins.validate.leakage import answer_in_prompt, answers_in_prompts
    from tunewatch.plugins.validate.ngrams import word_batch

    rng = random.Random(4)
    pairs: list[tuple[str, str]] = []
    for _ in range(300):
        prompt = _sentence(rng, rng.randrange(0, 60))
        words = prompt.split()
        start = rng.randrange(len(words) + 1)
        kind = rng.randrange(4)
        if kind == 0:  # a copy of part of the prompt, sometimes cut mid-word at both ends
            answer = " ".join(words[start : start + rng.randrange(6, 20)])
            if rng.random() < 0.5 and len(answer) > 4:
                answer = answer[2:-2]
        elif kind == 1:  # mostly copied, a few words changed
            answer = " ".join(w if rng.random() < 0.85 else "other" for w in words[start:])
        elif kind == 2:
            answer = _sentence(rng, rng.randrange(0, 20))
        else:
            answer = rng.choice(["Negative", ""])
        pairs.append((prompt if rng.random() < 0.95 else "", answer))
    # Eight words of which the first and last are cut: a copy, though only 6 of 8 words match.
    pairs.append(
        (
            "xalpha1 bravo2 charlie3 delta4 echo5 foxtrot6 golf7 hotel8y",
            "alpha1 bravo2 charlie3 delta4 echo5 foxtrot6 golf7 hotel8",
        )
    )
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    found = answers_in_prompts(prompts, answers, word_batch([t for pair in pairs for t in pair]))
    assert found == [answer_in_prompt(p, a) for p, a in pairs]
    assert found[-1] == 1.0
    assert sum(share is not None for share in found) > 20


def test_test_leaks_of_a_batch_are_each_rows_own() -> None:
    from tunewatch.plugins.validate.leakage import TEST_CONTAINMENT, TEST_NGRAM, HeldOutIndex
    from tunewatch.plugins.validate.ngrams import ngram_hashes, word_batch, word_hashes

    rng = random.Random(5)
    tests = [_sentence(rng, rng.randrange(3, 30)) for _ in range(30)]
    index = HeldOutIndex()
    for line, test in enumerate(tests, 1):
        index.add(line, test)
    texts = [_sentence(rng, rng.randrange(0, 40)) for _ in range(200)]
    for i in range(0, 200, 7):  # a test row, whole or in part, inside a training text
        test_words = rng.choice(tests).split()
        keep = len(test_words) if i % 2 else rng.randrange(1, len(test_words) + 1)
        texts[i] += " " + " ".join(test_words[:keep])
    leaks = index.leaks(word_batch(texts))
    for text, leak in zip(texts, leaks, strict=True):
        grams = set(ngram_hashes(word_hashes(text), TEST_NGRAM).tolist())
        expected = []
        for line, test in enumerate(tests, 1):
            test_grams = set(ngram_hashes(word_hashes(test), TEST_NGRAM).tolist())
            if len(grams & test_grams) / len(test_grams) >= TEST_CONTAINMENT:
                expected.append(line)
        assert (leak.test_lines if leak else ()) == tuple(expected)
    assert sum(leak is not None for leak in leaks) >= 10
