"""Is B better than A on the same test items? Exact McNemar and paired bootstrap, no torch.

The verdict rule, in order (differences are B minus A):

1. Accuracy decides when the exact McNemar test on the discordant items gives p < alpha: the
   task metric is what a person asked about, so it wins over the log-likelihood.
2. Otherwise the mean log-likelihood of the reference decides when its paired bootstrap
   interval excludes 0, and the accuracy difference does not point the other way: the
   log-likelihood sees small improvements that 20 right/wrong answers cannot, but a drop in
   accuracy next to a rise in likelihood is evidence for neither.
3. Otherwise: "no significant difference (n=...)".

The summary names the test that decided. Two tests each at alpha make a false "better" or
"worse" at most 2 * alpha likely when nothing differs (the exact McNemar test is conservative,
so it is less in practice); pass alpha=0.025 to hold the verdict itself to 5 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tunewatch.plugins.compare.results import ItemResult, Significance, Verdict

# Resampled means are computed in blocks of at most this many drawn indices, so that 10,000
# resamples of a 5,000-item test file need 4 MB at a time, not 400 MB.
_BLOCK_INDICES = 500_000


def mcnemar_exact(only_a_right: int, only_b_right: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min(b, c)), X ~ Bin(b + c, 1/2), at most 1.

    Items both snapshots got right, or both wrong, say nothing about which is better and are
    not an argument. p is 1 when no item is discordant.
    """
    if only_a_right < 0 or only_b_right < 0:
        raise ValueError(
            f"discordant counts must be >= 0, got only_a_right={only_a_right}, "
            f"only_b_right={only_b_right}"
        )
    n = only_a_right + only_b_right
    if n == 0:
        return 1.0
    tail = 0
    term = 1  # comb(n, i), built up term by term: exact integers, no overflow, no float loss
    for i in range(min(only_a_right, only_b_right) + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    # int / int is correctly rounded in Python however large both are.
    return min(1.0, 2 * tail / (1 << n))


def paired_bootstrap_ci(
    diffs: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item differences (B minus A).

    Items are resampled with replacement, each pair kept whole, so what A and B share (an easy
    item is easy for both) cancels. The same inputs and seed give the same interval.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    values = np.asarray(diffs, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no differences to resample: the test file gave no items")
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_INDICES // values.size)
    means = np.concatenate(
        [
            values[
                rng.integers(0, values.size, size=(min(block, resamples - start), values.size))
            ].mean(axis=1)
            for start in range(0, resamples, block)
        ]
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def significance(
    items: Sequence[ItemResult], alpha: float = 0.05, confidence: float = 0.95
) -> Significance | None:
    """B against A on paired test items, with the verdict (see the module docstring); None
    without items."""
    if not items:
        return None
    n = len(items)
    only_a = sum(1 for item in items if item.correct_a and not item.correct_b)
    only_b = sum(1 for item in items if item.correct_b and not item.correct_a)
    accuracy_diffs = [float(item.correct_b) - float(item.correct_a) for item in items]
    p = mcnemar_exact(only_a, only_b)
    accuracy_difference = (only_b - only_a) / n
    accuracy_ci = paired_bootstrap_ci(accuracy_diffs, confidence)
    ll_diffs = [item.log_likelihood_b - item.log_likelihood_a for item in items]
    if all(math.isfinite(d) for d in ll_diffs):
        ll_difference = math.fsum(ll_diffs) / n
        ll_ci = paired_bootstrap_ci(ll_diffs, confidence)
    else:
        # A diverged snapshot scores NaN or -inf: no interval means anything then, and the
        # recommendation rules that snapshot out on `ModelSide.finite` anyway.
        ll_difference, ll_ci = math.nan, (math.nan, math.nan)
    verdict, summary = _verdict(n, p, alpha, accuracy_difference, ll_difference, ll_ci, confidence)
    return Significance(
        n=n,
        accuracy_difference=accuracy_difference,
        accuracy_ci=accuracy_ci,
        mcnemar_p=p,
        only_a_right=only_a,
        only_b_right=only_b,
        log_likelihood_difference=ll_difference,
        log_likelihood_ci=ll_ci,
        confidence=confidence,
        verdict=verdict,
        summary=summary,
    )


def _verdict(
    n: int,
    p: float,
    alpha: float,
    accuracy_difference: float,
    ll_difference: float,
    ll_ci: tuple[float, float],
    confidence: float,
) -> tuple[Verdict, str]:
    accuracy_text = f"{accuracy_difference * 100:+.1f} % accuracy, {p_text(p)}"
    ll_text = (
        f"log-likelihood {ll_difference:+.2f} per token "
        f"({confidence * 100:g} % CI {ll_ci[0]:.2f} to {ll_ci[1]:.2f})"
    )
    ll_sign = _sign_excluding_zero(ll_ci)
    if p < alpha:
        verdict: Verdict = "better" if accuracy_difference > 0 else "worse"
        if ll_sign == -_sign(accuracy_difference):
            return verdict, f"{verdict}: {accuracy_text}; but {ll_text}"
        return verdict, f"{verdict}: {accuracy_text}"
    if ll_sign != 0 and _sign(accuracy_difference) in (0, ll_sign):
        verdict = "better" if ll_sign > 0 else "worse"
        return verdict, f"{verdict}: {ll_text}; {accuracy_text} (not significant)"
    return "no significant difference", f"no significant difference (n={n})"


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _sign_excluding_zero(ci: tuple[float, float]) -> int:
    """+1 when the whole interval is above 0, -1 when below, 0 when it holds 0 (or is NaN)."""
    low, high = ci
    if low > 0:
        return 1
    if high < 0:
        return -1
    return 0


def p_text(p: float) -> str:
    """A p-value as a person reads it: "p=0.031" (two significant digits), "p<0.001" below."""
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.2g}"
