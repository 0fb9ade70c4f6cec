"""What a validation finds: problems with line numbers, statistics, a score and a verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["ready", "review", "fix"]
Level = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem at one place of the file."""

    category: str  # e.g. "invalid_json", "missing_messages_list", "near_duplicate"
    level: Level
    line: int  # 1-based line (JSONL) or element index + 1 (JSON array)
    message: str


@dataclass(frozen=True, slots=True)
class Deduction:
    """One explained part of the score: `points` taken off 100 and why."""

    points: float
    reason: str


@dataclass(frozen=True, slots=True)
class TokenStats:
    """Token counts of one side (prompt or answer) over all examples."""

    min: int
    mean: float
    p50: int
    p95: int
    max: int
    histogram: tuple[tuple[int, int], ...]  # (bucket upper bound, count)


@dataclass(frozen=True, slots=True)
class ValidationReport:
    path: str
    format: str  # "openai_chat", "sharegpt", "alpaca", "trl_prompt_completion", ...
    examples: int
    sha256: str
    problems: tuple[Problem, ...]
    errors: int  # total counts (problems may hold only the first N of each category)
    warnings: int
    duplicate_groups: tuple[tuple[int, ...], ...]  # line numbers of each group
    near_duplicate_groups: tuple[tuple[int, ...], ...]
    tokenizer: str  # the tokenizer's path, or "approximate (no tokenizer)"
    prompt_tokens: TokenStats | None
    answer_tokens: TokenStats | None
    over_max_seq_len: int
    score: int  # 0-100
    deductions: tuple[Deduction, ...] = field(default=())

    @property
    def verdict(self) -> Verdict:
        if self.score >= 90:
            return "ready"
        if self.score >= 70:
            return "review"
        return "fix"
