"""`validate_file`: the single entry point that reads, checks and scores one data file."""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

from tunewatch.plugins.validate import formats
from tunewatch.plugins.validate.checks import FieldTypes, Finding, check_row
from tunewatch.plugins.validate.duplicates import DuplicateFinder
from tunewatch.plugins.validate.leakage import HeldOutIndex, HeldOutLeak, answers_in_prompts
from tunewatch.plugins.validate.ngrams import word_batch
from tunewatch.plugins.validate.reader import (
    Record,
    UnreadableInput,
    open_checked,
    read_records,
)
from tunewatch.plugins.validate.report import Problem, ValidationReport
from tunewatch.plugins.validate.score import Tally, score
from tunewatch.plugins.validate.tokens import TokenCounter, TokenTally, load_counter

__all__ = ["UnreadableInput", "validate_file"]

DETECT_ROWS = 50
KEEP_PER_CATEGORY = 100  # problems kept per category; the counts cover all of them
CHUNK_ROWS = 512  # rows checked together: one numpy pass and one tokenizer call per check
CHUNK_CHARS = 1 << 22  # ... or fewer rows when they are long, so memory stays bounded
TOKEN_CHUNKS_IN_FLIGHT = 4  # chunks the tokenizer may be behind the checks


class _HashingReader:
    """Pass-through reader that hashes what it reads, so the file is read only once."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.sha256.update(data)
        return data


def validate_file(
    path: Path,
    *,
    tokenizer: str | None = None,
    test_file: Path | None = None,
    max_seq_len: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ValidationReport:
    """Validate one JSONL or JSON-array file of fine-tuning examples.

    `tokenizer` is a tokenizer directory or a run directory (its newest checkpoint-N/ with
    tokenizer files is used); without one, token counts are a labelled chars/4 estimate.
    `progress` is called with the number of bytes read so far, about once per MiB.
    Raises UnreadableInput (missing, directory, empty, nothing that parses as JSON) and
    tokens.TokenizerNotFound.
    """
    counter = load_counter(tokenizer)
    held_out = _index_test_file(test_file) if test_file is not None else None
    with open_checked(path) as raw:
        hashing = _HashingReader(raw)
        with ThreadPoolExecutor(1, thread_name_prefix="tokenizer") as tokenizing:
            run = _Run(counter, held_out, max_seq_len, tokenizing)
            run.consume(read_records(hashing, on_bytes=progress))  # type: ignore[arg-type]
        while hashing.read(1 << 20):  # hash any bytes after a closing ']'
            pass
    if run.objects == 0 or (run.objects < run.examples // 2 and run.saw_binary):
        # Mostly undecodable bytes: a binary file, not a data file with some bad rows.
        raise UnreadableInput(
            f"{path}: not JSON data ({run.objects} objects in {run.examples} rows)"
        )
    return run.report(str(path), hashing.sha256.hexdigest())


def _index_test_file(test_file: Path) -> HeldOutIndex:
    index = HeldOutIndex()
    with open_checked(test_file) as stream:
        records = [r for r in read_records(stream) if r.error is None]
    fmt = formats.detect_format(r.value for r in records[:DETECT_ROWS])
    for record in records:
        prompt, answer = formats.split_example(fmt, record.value)
        index.add(record.line, f"{prompt}\n{answer}")
    return index


@dataclass(slots=True)
class _Chunk:
    """Rows read but not yet checked together: each row's findings so far, and its texts."""

    notes: list[tuple[int, list[Finding]]] = field(default_factory=list)  # every row, in order
    lines: list[int] = field(default_factory=list)  # from here on: the rows that parsed
    findings: list[list[Finding]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)
    chars: int = 0

    def full(self) -> bool:
        return len(self.notes) >= CHUNK_ROWS or self.chars >= CHUNK_CHARS


class _Run:
    """The state of one validation while rows stream through, a chunk of rows at a time."""

    def __init__(
        self,
        counter: TokenCounter,
        held_out: HeldOutIndex | None,
        max_seq_len: int | None,
        tokenizing: Executor,
    ) -> None:
        self.counter = counter
        self.held_out = held_out
        self.max_seq_len = max_seq_len
        self.format = formats.UNKNOWN
        self.examples = 0
        self.objects = 0
        self.saw_binary = False
        self.problems: list[Problem] = []
        self.kept: Counter[str] = Counter()
        self.levels: Counter[str] = Counter()
        self.error_rows = self.warning_rows = self.self_leaks = self.test_leaks = 0
        self.over = 0
        self.types = FieldTypes()
        self.duplicates = DuplicateFinder()
        self.prompt_tokens, self.answer_tokens = TokenTally(), TokenTally()
        self._tokenizing = tokenizing
        self._counting: deque[tuple[list[int], Future[list[int]]]] = deque()
        self.near_groups: list[tuple[int, ...]] = []

    def consume(self, records: Iterator[Record]) -> None:
        head: list[Record] = []
        for record in records:
            head.append(record)
            if sum(r.error is None for r in head) >= DETECT_ROWS:
                break
        self.format = formats.detect_format(r.value for r in head if r.error is None)
        chunk = _Chunk()
        for record in chain(head, records):
            self._read(record, chunk)
            if chunk.full():
                self._check(chunk)
                chunk = _Chunk()
        self._check(chunk)
        self.near_groups = self.duplicates.near_groups()  # while the tokenizer catches up
        while self._counting:
            self._take_counts()

    def _read(self, record: Record, chunk: _Chunk) -> None:
        """The checks of one row on its own; the rest wait for its chunk."""
        self.examples += 1
        if record.error is not None:
            self.saw_binary = self.saw_binary or record.error == "invalid_utf8"
            chunk.notes.append((record.line, [(record.error, "error", record.message)]))
            return
        self.objects += isinstance(record.value, dict)
        findings = check_row(self.format, record.value) + self.types.check(
            record.line, record.value
        )
        prompt, answer = formats.split_example(self.format, record.value)
        chunk.notes.append((record.line, findings))
        chunk.lines.append(record.line)
        chunk.findings.append(findings)
        chunk.prompts.append(prompt)
        chunk.answers.append(answer)
        chunk.rows.append(record.value)
        chunk.chars += len(prompt) + len(answer)

    def _check(self, chunk: _Chunk) -> None:
        """Leakage, duplicates and tokens of a chunk's rows, each check in one batch."""
        # Prompt i is text 2i and answer i is text 2i+1; both hashed once for all checks.
        pairs = zip(chunk.prompts, chunk.answers, strict=True)
        words = word_batch([text for pair in pairs for text in pair])
        row_words = words.pairs()  # no word spans the newline between prompt and answer
        shares = answers_in_prompts(chunk.prompts, chunk.answers, words)
        leaks = self.held_out.leaks(row_words) if self.held_out else [None] * len(chunk.lines)
        for findings, share, leak in zip(chunk.findings, shares, leaks, strict=True):
            findings += self._leaks(share, leak)
        for line, findings in chunk.notes:
            self._note(line, findings)
        self.duplicates.add_batch(chunk.lines, chunk.rows, row_words)
        if chunk.lines:
            # Tokenized in the background while the next chunks are read and checked.
            texts = chunk.prompts + chunk.answers
            self._counting.append((chunk.lines, self._tokenizing.submit(self.counter.count, texts)))
        while len(self._counting) > TOKEN_CHUNKS_IN_FLIGHT:
            self._take_counts()

    def _leaks(self, share: float | None, leak: HeldOutLeak | None) -> list[Finding]:
        found: list[Finding] = []
        if share is not None:
            self.self_leaks += 1
            found.append(
                ("answer_in_prompt", "warning", f"{share:.0%} of the answer is in the prompt")
            )
        if leak is not None:
            self.test_leaks += 1
            lines = ", ".join(map(str, leak.test_lines[:10]))
            message = f"contains {leak.containment:.0%} of test row(s) {lines}"
            found.append(("test_leakage", "error", message))
        return found

    def _note(self, line: int, findings: list[Finding]) -> None:
        levels = {level for _, level, _ in findings}
        if "error" in levels:
            self.error_rows += 1
        elif "warning" in levels:
            self.warning_rows += 1
        for category, level, message in findings:
            self.levels[level] += 1
            if self.kept[category] < KEEP_PER_CATEGORY:
                self.kept[category] += 1
                self.problems.append(Problem(category, level, line, message))

    def _take_counts(self) -> None:
        """Record the token counts of the oldest chunk sent to the tokenizer."""
        lines, counting = self._counting.popleft()
        counts = counting.result()
        prompts, answers = counts[: len(lines)], counts[len(lines) :]
        self.prompt_tokens.extend(prompts)
        self.answer_tokens.extend(answers)
        if self.max_seq_len is None:
            return
        for line, p, a in zip(lines, prompts, answers, strict=True):
            if p + a > self.max_seq_len:
                self.over += 1
                message = f"{p + a} tokens > max_seq_len {self.max_seq_len}"
                self._note(line, [("over_max_seq_len", "warning", message)])

    def report(self, path: str, sha256: str) -> ValidationReport:
        exact = tuple(self.duplicates.exact_groups())
        near = tuple(self.near_groups)
        tally = Tally(
            examples=self.examples,
            error_rows=self.error_rows,
            warning_rows=max(0, self.warning_rows - self.self_leaks - self.over),
            surplus_exact=sum(len(g) - 1 for g in exact),
            surplus_near=sum(len(g) - 1 for g in near),
            self_leaks=self.self_leaks,
            test_leaks=self.test_leaks,
            over_max_seq_len=self.over,
        )
        points, deductions = score(tally)
        return ValidationReport(
            path=path,
            format=self.format,
            examples=self.examples,
            sha256=sha256,
            problems=tuple(sorted(self.problems, key=lambda p: (p.line, p.category))),
            errors=self.levels["error"],
            warnings=self.levels["warning"],
            duplicate_groups=exact,
            near_duplicate_groups=near,
            tokenizer=self.counter.name,
            prompt_tokens=self.prompt_tokens.stats(),
            answer_tokens=self.answer_tokens.stats(),
            over_max_seq_len=self.over,
            score=points,
            deductions=deductions,
        )
