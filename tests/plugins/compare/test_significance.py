"""Significance of B against A on paired items: exact McNemar, paired bootstrap, the verdict."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunewatch.plugins.compare.results import ItemResult, Significance
from tunewatch.plugins.compare.significance import (
    mcnemar_exact,
    p_text,
    paired_bootstrap_ci,
    significance,
)

from .comparisons import item, paired


def brute_force_mcnemar(b: int, c: int) -> float:
    """Every one of the 2**(b+c) ways to split the discordant items, counted one by one."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    at_most_k = sum(1 for split in itertools.product((0, 1), repeat=n) if sum(split) <= k)
    return float(min(Fraction(1), 2 * Fraction(at_most_k, 2**n)))


@pytest.mark.parametrize(("b", "c"), [(b, c) for b in range(9) for c in range(9)])
def test_mcnemar_matches_brute_force_enumeration(b: int, c: int) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(brute_force_mcnemar(b, c), rel=1e-12)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 5, 0.0625),  # 2 / 2**5: five discordant items all one way are not enough at 5 %
        (0, 6, 0.03125),  # six are
        (1, 10, 24 / 2048),  # 2 * P(X <= 1) = 2 * (1 + 11) / 2**11
        (2, 12, 212 / 16384),  # 2 * (1 + 14 + 91) / 2**14 = 0.0129, as binomtest(2, 14) gives
        (3, 3, 1.0),
        (0, 0, 1.0),
    ],
)
def test_mcnemar_textbook_values(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_stays_exact_for_large_counts() -> None:
    p = mcnemar_exact(4_900, 5_100)  # 2**10000 overflows a float; exact integers do not
    assert 0.04 < p < 0.06
    assert mcnemar_exact(0, 1_000) == 2.0**-999  # far below what a float sum of terms keeps


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="only_a_right=-1"):
        mcnemar_exact(-1, 3)


@given(st.integers(0, 300), st.integers(0, 300))
def test_mcnemar_is_symmetric_and_a_probability(b: int, c: int) -> None:
    p = mcnemar_exact(b, c)
    assert p == mcnemar_exact(c, b)
    assert 0.0 <= p <= 1.0


@given(st.integers(0, 100), st.integers(0, 100))
def test_one_more_discordant_item_on_the_winning_side_never_raises_p(b: int, c: int) -> None:
    if c >= b:
        assert mcnemar_exact(b, c + 1) <= mcnemar_exact(b, c)


finite_diffs = st.lists(st.floats(-100, 100, allow_nan=False), min_size=1, max_size=60)


@given(finite_diffs, st.integers(0, 2**32 - 1))
def test_bootstrap_interval_lies_within_the_data_and_holds_the_mean(
    diffs: list[float], seed: int
) -> None:
    low, high = paired_bootstrap_ci(diffs, resamples=400, seed=seed)
    mean = math.fsum(diffs) / len(diffs)
    tolerance = 1e-9 * (1 + max(abs(d) for d in diffs))
    assert min(diffs) - tolerance <= low <= high <= max(diffs) + tolerance
    assert low - tolerance <= mean <= high + tolerance


@given(finite_diffs, st.integers(0, 2**32 - 1))
def test_bootstrap_is_deterministic_with_a_seed(diffs: list[float], seed: int) -> None:
    assert paired_bootstrap_ci(diffs, resamples=300, seed=seed) == paired_bootstrap_ci(
        diffs, resamples=300, seed=seed
    )


def test_bootstrap_interval_shrinks_with_more_items() -> None:
    pattern = [0.3, -0.1, 0.2, 0.0, 0.5, -0.2, 0.1, 0.4]
    widths = []
    for repeat in (2, 8, 32):
        low, high = paired_bootstrap_ci(pattern * repeat)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[1] == pytest.approx(widths[0] / 2, rel=0.15)  # 1 / sqrt(n)


def test_bootstrap_interval_widens_with_the_confidence() -> None:
    diffs = [0.3, -0.1, 0.2, 0.0, 0.5, -0.2, 0.1, 0.4] * 4
    low90, high90 = paired_bootstrap_ci(diffs, confidence=0.90)
    low99, high99 = paired_bootstrap_ci(diffs, confidence=0.99)
    assert low99 < low90 < high90 < high99


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"diffs": []}, "no differences"),
        ({"diffs": [1.0], "confidence": 95}, "between 0 and 1"),
        ({"diffs": [1.0], "resamples": 0}, "at least 1"),
    ],
)
def test_bootstrap_says_what_is_wrong(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap_ci(**kwargs)  # type: ignore[arg-type]


def judge(items: list[ItemResult]) -> Significance:
    sig = significance(items)
    assert sig is not None
    return sig


def test_no_items_no_significance() -> None:
    assert significance([]) is None


def test_clearly_better_b_is_decided_by_mcnemar() -> None:
    sig = judge(paired(both=10, only_a=1, only_b=9))
    assert (sig.n, sig.only_a_right, sig.only_b_right) == (20, 1, 9)
    assert sig.accuracy_difference == pytest.approx(0.4)
    assert sig.mcnemar_p == pytest.approx(mcnemar_exact(1, 9))
    assert sig.verdict == "better"
    assert sig.summary == "better: +40.0 % accuracy, p=0.021"
    assert sig.accuracy_ci[0] > 0 < sig.accuracy_ci[1]


def test_clearly_worse_b_on_the_log_likelihood_when_accuracy_ties() -> None:
    items = [item(True, True, -1.0, -1.2 - 0.01 * (i % 5), number=i) for i in range(20)]
    sig = judge(items)
    assert sig.verdict == "worse"
    assert sig.log_likelihood_difference == pytest.approx(-0.22)
    assert sig.log_likelihood_ci[1] < 0
    assert sig.summary.startswith("worse: log-likelihood -0.22 per token (95 % CI -0.23 to -0.21)")
    assert sig.summary.endswith("+0.0 % accuracy, p=1 (not significant)")


def test_a_tie_of_twenty_items_is_no_significant_difference() -> None:
    sig = judge(paired(both=12, only_a=2, only_b=2, neither=4))
    assert sig.verdict == "no significant difference"
    assert sig.summary == "no significant difference (n=20)"
    assert sig.mcnemar_p == 1.0


def test_a_few_more_right_answers_on_twenty_items_are_not_enough() -> None:
    sig = judge(paired(both=10, only_a=1, only_b=4, neither=5))
    assert sig.mcnemar_p > 0.05
    assert sig.summary == "no significant difference (n=20)"


def test_likelihood_does_not_decide_against_the_accuracy_it_contradicts() -> None:
    # B answers 3 more right (not significant) but its likelihood is lower everywhere.
    sig = judge(paired(both=17, only_b=3, ll_b=-1.3))
    assert sig.log_likelihood_ci[1] < 0
    assert sig.verdict == "no significant difference"


def test_significant_accuracy_names_a_likelihood_that_disagrees() -> None:
    sig = judge(paired(both=12, only_b=8, ll_b=-1.3))
    assert sig.verdict == "better"
    assert sig.summary.startswith("better: +40.0 % accuracy, p=0.0078; but log-likelihood -0.30")


def test_a_diverged_side_leaves_the_verdict_to_accuracy() -> None:
    items = [item(True, False, -1.0, math.nan, number=i) for i in range(10)]
    sig = judge(items)
    assert math.isnan(sig.log_likelihood_difference)
    assert sig.verdict == "worse"
    assert sig.summary == "worse: -100.0 % accuracy, p=0.002"


@pytest.mark.parametrize(
    ("p", "text"), [(1.0, "p=1"), (0.0312, "p=0.031"), (0.00049, "p<0.001"), (0.05, "p=0.05")]
)
def test_p_values_read_as_a_person_writes_them(p: float, text: str) -> None:
    assert p_text(p) == text
