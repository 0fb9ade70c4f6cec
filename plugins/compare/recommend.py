"""Which snapshot to use, and why: quality first, then speed and size as the weights say.

A snapshot whose weights or outputs hold NaN/Inf is never recommended. A significant quality
difference (see `significance`) always decides: a faster model that answers worse is no
recommendation, and the speed table stays there for whoever wants one anyway. Only when quality
does not decide do speed and size weigh against each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tunewatch.plugins.compare.results import Comparison, ModelSide, Recommendation, Side
from tunewatch.plugins.compare.significance import significance
from tunewatch.plugins.compare.weights import RecommendWeights


@dataclass(frozen=True, slots=True)
class _Figure:
    """One figure measured on both sides, and how much it counts."""

    what: str  # "decode speed", "prefill speed", "size"
    weight: float
    value_a: float
    value_b: float
    lower_is_better: bool
    # Timings whose (min, max) over the repeats overlap are within the noise of the machine.
    within_noise: bool = False

    def differs(self, threshold: float) -> bool:
        a, b = self.value_a, self.value_b
        if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
            return False  # not measured: no argument either way
        return not self.within_noise and abs(b - a) / min(a, b) >= threshold

    def advantage_b(self, threshold: float) -> float:
        """log of B's advantage (2x better and 2x worse weigh the same), 0 when it ties."""
        if not self.differs(threshold):
            return 0.0
        ratio = self.value_b / self.value_a
        return -math.log(ratio) if self.lower_is_better else math.log(ratio)

    def text(self, side: Side, threshold: float) -> str:
        """`side` against the other: "12 % faster decode speed", "same size"."""
        if not self.differs(threshold):
            return f"same {self.what}"
        mine, other = (self.value_a, self.value_b) if side == "a" else (self.value_b, self.value_a)
        words = ("smaller", "larger") if self.lower_is_better else ("faster", "slower")
        better = (mine < other) == self.lower_is_better
        change = abs(mine - other) / other
        return f"{change * 100:.0f} % {words[0] if better else words[1]} {self.what}"


def recommend(comparison: Comparison, weights: RecommendWeights | None = None) -> Recommendation:
    """The snapshot to use and the reasons, most decisive first."""
    weights = weights or RecommendWeights()
    a, b = comparison.a, comparison.b
    if not a.finite and not b.finite:
        return Recommendation(
            None,
            (
                "neither: both hold NaN/Inf in their weights or outputs (diverged); "
                "go back to an earlier checkpoint",
            ),
        )
    if not b.finite:
        return Recommendation("a", ("A: B holds NaN/Inf in its weights or outputs (diverged)",))
    if not a.finite:
        return Recommendation("b", ("B: A holds NaN/Inf in its weights or outputs (diverged)",))
    quality = _quality(comparison, weights)
    if quality is not None:
        side, reason = quality
        others = _others_text(side, a, b, weights)
        return Recommendation(side, (reason, f"{side.upper()}: {others}"))
    return _by_speed_and_size(comparison, weights)


def with_verdict(
    comparison: Comparison,
    weights: RecommendWeights | None = None,
    alpha: float = 0.05,
    confidence: float = 0.95,
) -> Comparison:
    """`comparison` with its significance and recommendation filled in from its figures."""
    judged = replace(comparison, significance=significance(comparison.items, alpha, confidence))
    return replace(judged, recommendation=recommend(judged, weights))


def _quality(comparison: Comparison, weights: RecommendWeights) -> tuple[Side, str] | None:
    sig = comparison.significance
    if sig is not None:
        # The summary says which test decided and by how much: "better: +15.0 % accuracy, p=0.01".
        evidence = sig.summary.partition(": ")[2]
        if sig.verdict == "better":
            return "b", f"B: better than A, {evidence}"
        if sig.verdict == "worse":
            return "a", f"A: B is worse, {evidence}"
        return None
    loss_a = comparison.a.trainer_metrics.get("eval_loss")
    loss_b = comparison.b.trainer_metrics.get("eval_loss")
    if loss_a is None or loss_b is None or not (math.isfinite(loss_a) and math.isfinite(loss_b)):
        return None
    if abs(loss_b - loss_a) < weights.min_eval_loss_difference * max(abs(loss_a), abs(loss_b)):
        return None
    side: Side = "b" if loss_b < loss_a else "a"
    return side, (
        f"{side.upper()}: lower eval_loss ({loss_a:.4g} for A, {loss_b:.4g} for B; "
        "logged by the trainer, not measured here)"
    )


def _by_speed_and_size(comparison: Comparison, weights: RecommendWeights) -> Recommendation:
    a, b = comparison.a, comparison.b
    threshold = weights.min_relative_difference
    score = sum(f.weight * f.advantage_b(threshold) for f in _figures(a, b, weights))
    # At a tie (score 0) nothing is gained by switching: keep A, the snapshot already in use.
    side: Side = "b" if score > 0 else "a"
    others = _others_text(side, a, b, weights)
    return Recommendation(side, (f"{side.upper()}: {_no_quality_text(comparison)}, {others}",))


def _no_quality_text(comparison: Comparison) -> str:
    if comparison.significance is not None:
        return "no quality difference"
    sides = (comparison.a, comparison.b)
    if all(math.isfinite(s.trainer_metrics.get("eval_loss", math.nan)) for s in sides):
        return "about the same trainer-logged eval_loss"
    return "quality not compared (no test file, no trainer-logged eval_loss)"


def _others_text(side: Side, a: ModelSide, b: ModelSide, weights: RecommendWeights) -> str:
    """Speed and size from the point of view of `side`: "12 % faster decode speed, same size"."""
    threshold = weights.min_relative_difference
    return ", ".join(f.text(side, threshold) for f in _figures(a, b, weights))


def _figures(a: ModelSide, b: ModelSide, weights: RecommendWeights) -> list[_Figure]:
    size = _Figure(
        "size",
        weights.size,
        float(a.size.weights_bytes),
        float(b.size.weights_bytes),
        lower_is_better=True,
    )
    if a.speed is None or b.speed is None:
        return [size]
    decode = _timing(
        "decode speed",
        weights.decode_speed,
        (a.speed.decode_tokens_per_s, a.speed.decode_spread),
        (b.speed.decode_tokens_per_s, b.speed.decode_spread),
    )
    prefill = _timing(
        "prefill speed",
        weights.prefill_speed,
        (a.speed.prefill_tokens_per_s, a.speed.prefill_spread),
        (b.speed.prefill_tokens_per_s, b.speed.prefill_spread),
    )
    return [decode, prefill, size]


_Timing = tuple[float, tuple[float, float]]  # median tokens/s, (min, max) over the repeats


def _timing(what: str, weight: float, a: _Timing, b: _Timing) -> _Figure:
    (median_a, (low_a, high_a)), (median_b, (low_b, high_b)) = a, b
    overlap = low_a <= high_b and low_b <= high_a
    return _Figure(what, weight, median_a, median_b, lower_is_better=False, within_noise=overlap)
