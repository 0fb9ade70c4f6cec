"""The quality score: 100 minus capped deductions, each proportional to the share of rows hit.

Formula (f = affected rows / examples, each term capped):
  rows with errors        min(50, max(2, 500 f))   10 % broken rows alone means "fix"
  rows with warnings only min(10, 100 f)
  surplus exact copies    min(20, 200 f)
  surplus near copies     min(20, 200 f)         as costly as exact copies: both overweight
  answer in own prompt    min(10, 100 f)
  rows leaking test rows  min(30, 5 + 500 f)       any test leak costs at least 5
  over max_seq_len        min(15, 100 f)           truncated in training
  fewer than 10 examples  10
Verdicts (ValidationReport.verdict): < 70 fix before training, 70-89 review warnings, >= 90 ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewatch.plugins.validate.report import Deduction

MIN_EXAMPLES = 10


@dataclass(frozen=True, slots=True)
class Tally:
    """The counts the score depends on."""

    examples: int
    error_rows: int = 0
    warning_rows: int = 0
    surplus_exact: int = 0
    surplus_near: int = 0
    self_leaks: int = 0
    test_leaks: int = 0
    over_max_seq_len: int = 0


def score(tally: Tally) -> tuple[int, tuple[Deduction, ...]]:
    """(score 0-100, the deductions that explain it)."""
    n = max(tally.examples, 1)
    deductions: list[Deduction] = []

    def take(count: int, points: float, reason: str) -> None:
        if count > 0 and points > 0:
            deductions.append(Deduction(round(points, 1), f"{reason} ({count}/{n} rows)"))

    take(tally.error_rows, min(50, max(2, 500 * tally.error_rows / n)), "rows with errors")
    take(tally.warning_rows, min(10, 100 * tally.warning_rows / n), "rows with warnings")
    take(tally.surplus_exact, min(20, 200 * tally.surplus_exact / n), "exact duplicate rows")
    take(tally.surplus_near, min(20, 200 * tally.surplus_near / n), "near-duplicate rows")
    take(tally.self_leaks, min(10, 100 * tally.self_leaks / n), "answers copied from the prompt")
    take(
        tally.test_leaks, min(30, 5 + 500 * tally.test_leaks / n), "rows overlapping the test file"
    )
    take(tally.over_max_seq_len, min(15, 100 * tally.over_max_seq_len / n), "rows over max_seq_len")
    if tally.examples < MIN_EXAMPLES:
        deductions.append(Deduction(10, f"only {tally.examples} examples (< {MIN_EXAMPLES})"))
    total = sum(d.points for d in deductions)
    return max(0, min(100, round(100 - total))), tuple(deductions)
