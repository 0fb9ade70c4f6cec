"""The test items of a comparison: (prompt, reference answer) pairs, and how an answer is judged.

The test file may be in any format the validator reads (JSONL or a JSON array; chat, Alpaca,
prompt/completion, question/answer, ...): its reader and format detection are used as they are.
"""

from __future__ import annotations

import re
import string
import unicodedata
from itertools import chain, islice
from pathlib import Path

from tunewatch.plugins.validate import formats
from tunewatch.plugins.validate.reader import UnreadableInput, open_checked, read_records

__all__ = ["UnreadableInput", "is_correct", "normalise", "read_test_items"]

DETECT_ROWS = 50  # rows that vote on the format, as in the validator
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def read_test_items(path: Path) -> list[tuple[str, str]]:
    """The (prompt, reference) pairs of `path`, skipping rows without both.

    Raises UnreadableInput when the file cannot be read or no row has both a prompt and an
    answer (a plain-text file, for instance, has answers but no prompts).
    """
    with open_checked(path) as stream:
        values = (record.value for record in read_records(stream) if record.error is None)
        head = list(islice(values, DETECT_ROWS))
        fmt = formats.detect_format(head)
        pairs = [formats.split_example(fmt, value) for value in chain(head, values)]
    items = [(prompt, answer) for prompt, answer in pairs if prompt.strip() and answer.strip()]
    if not items:
        raise UnreadableInput(
            f"{path}: no row has both a prompt and a reference answer (format detected: {fmt}); "
            "a test file needs e.g. prompt/completion, question/answer or chat rows"
        )
    return items


def normalise(text: str) -> str:
    """Text reduced to what an answer means, the way SQuAD's evaluation script does it.

    Casefolded; punctuation removed (ASCII and every Unicode punctuation character); the
    articles a, an, the removed; runs of whitespace collapsed to one space and the ends stripped.
    So "The Eiffel Tower." and "eiffel tower" are the same answer.
    """
    folded = text.casefold()
    kept = "".join(
        " " if unicodedata.category(c).startswith("Z") else c
        for c in folded
        if c not in _ASCII_PUNCTUATION and not unicodedata.category(c).startswith("P")
    )
    return " ".join(_ARTICLES.sub(" ", kept).split())


def is_correct(output: str, reference: str) -> bool:
    """True when the output, normalised, equals the reference or contains it as whole words.

    Whole words, so that a reference "7" is not found inside "17"; containment, because a model
    asked a question often wraps the answer in a sentence or keeps generating after it.
    """
    wanted = normalise(reference)
    said = normalise(output)
    if not wanted:
        return said == wanted
    return said == wanted or f" {wanted} " in f" {said} "
