"""The recommendation: never a diverged snapshot, quality first, then speed and size."""

from __future__ import annotations

import pytest

from tunewatch.plugins.compare.recommend import recommend, with_verdict
from tunewatch.plugins.compare.results import ItemResult, ModelSide, Recommendation
from tunewatch.plugins.compare.weights import RecommendWeights

from .comparisons import GIB, comparison, paired, side, speed


def judged(a: ModelSide, b: ModelSide, items: list[ItemResult]) -> Recommendation:
    """The recommendation once significance has been judged on `items`."""
    rec = with_verdict(comparison(a, b, items)).recommendation
    assert rec is not None
    return rec


def test_a_diverged_snapshot_is_never_recommended_even_when_much_faster() -> None:
    c = comparison(
        side("checkpoint-400", speed=speed(decode=40)),
        side("checkpoint-600", speed=speed(decode=400), weights_bytes=GIB, finite=False),
    )
    rec = recommend(c)
    assert rec.choice == "a"
    assert rec.reasons == ("A: B holds NaN/Inf in its weights or outputs (diverged)",)


def test_a_diverged_a_leaves_b() -> None:
    rec = recommend(comparison(side("base", finite=False), side("checkpoint-600")))
    assert rec.choice == "b"


def test_a_diverged_snapshot_loses_even_with_better_measured_quality() -> None:
    rec = judged(
        side("checkpoint-400", speed=speed()),
        side("checkpoint-600", speed=speed(), finite=False),
        paired(both=5, only_b=15),
    )
    assert rec.choice == "a"


def test_both_diverged_recommends_neither_and_says_what_to_do() -> None:
    rec = recommend(comparison(side("a", finite=False), side("b", finite=False)))
    assert rec.choice is None
    assert "both hold NaN/Inf" in rec.reasons[0]
    assert "earlier checkpoint" in rec.reasons[0]


def test_quality_comes_before_speed() -> None:
    rec = judged(
        side("checkpoint-400", speed=speed(decode=80)),
        side("checkpoint-600", speed=speed(decode=40)),
        paired(both=5, only_a=1, only_b=14),
    )
    assert rec == Recommendation(
        "b",
        (
            "B: better than A, +65.0 % accuracy, p<0.001",
            "B: 50 % slower decode speed, same prefill speed, same size",
        ),
    )


def test_worse_quality_of_b_recommends_a() -> None:
    a, b = side("checkpoint-400"), side("checkpoint-600")
    rec = judged(a, b, paired(both=5, only_a=14, only_b=1))
    assert rec.choice == "a"
    assert rec.reasons[0] == "A: B is worse, -65.0 % accuracy, p<0.001"


def test_speed_breaks_a_quality_tie() -> None:
    a = side("checkpoint-400", speed=speed(decode=44.8))
    b = side("checkpoint-600", speed=speed(decode=40))
    rec = judged(a, b, paired(both=16, only_a=2, only_b=2))
    assert rec == Recommendation(
        "a", ("A: no quality difference, 12 % faster decode speed, same prefill speed, same size",)
    )


def test_size_breaks_a_tie_when_speed_is_the_same() -> None:
    a = side("checkpoint-400", speed=speed(), weights_bytes=4 * GIB)
    b = side("checkpoint-600", speed=speed(), weights_bytes=2 * GIB)
    rec = judged(a, b, paired(both=20))
    assert rec.choice == "b"
    assert rec.reasons[0].endswith("same decode speed, same prefill speed, 50 % smaller size")


def test_a_speed_gap_within_the_timing_noise_is_the_same_speed() -> None:
    a = side("checkpoint-400", speed=speed(decode=42, spread=0.1))
    b = side("checkpoint-600", speed=speed(decode=40, spread=0.1))
    rec = recommend(comparison(a, b))
    assert rec.choice == "a"  # nothing to gain by switching
    assert "same decode speed" in rec.reasons[0]


def test_a_gap_below_the_minimum_that_matters_is_no_gap() -> None:
    a = side("checkpoint-400", speed=speed(decode=41.5))
    b = side("checkpoint-600", speed=speed(decode=40))
    assert "same decode speed" in recommend(comparison(a, b)).reasons[0]
    weights = RecommendWeights(min_relative_difference=0.02)
    assert "4 % faster decode speed" in recommend(comparison(a, b), weights).reasons[0]


def test_the_weights_trade_speed_against_size() -> None:
    a = side("checkpoint-400", speed=speed(decode=40), weights_bytes=2 * GIB)
    b = side("checkpoint-600", speed=speed(decode=50), weights_bytes=3 * GIB)
    assert recommend(comparison(a, b)).choice == "b"  # faster weighs more than larger
    size_first = RecommendWeights(decode_speed=0.5, size=2.0)
    rec = recommend(comparison(a, b), size_first)
    assert rec.choice == "a"
    assert rec.reasons[0].endswith(
        "20 % slower decode speed, same prefill speed, 33 % smaller size"
    )


@pytest.mark.parametrize(
    ("eval_loss_a", "choice", "reason"),
    [
        (1.31, "b", "B: lower eval_loss (1.31 for A, 1.23 for B; logged by the trainer, not"),
        # Within 1 %: the trainer's figures tie and A's speed decides.
        (1.231, "a", "A: about the same trainer-logged eval_loss, 50 % faster decode speed"),
    ],
)
def test_without_a_test_file_the_trainer_eval_loss_decides_labelled_as_such(
    eval_loss_a: float, choice: str, reason: str
) -> None:
    a = side("checkpoint-400", speed=speed(decode=60), trainer_metrics={"eval_loss": eval_loss_a})
    b = side("checkpoint-600", speed=speed(decode=40), trainer_metrics={"eval_loss": 1.23})
    rec = recommend(comparison(a, b))
    assert rec.choice == choice
    assert rec.reasons[0].startswith(reason)


def test_without_any_quality_figure_it_says_so() -> None:
    rec = recommend(comparison(side("a"), side("b", weights_bytes=GIB)))
    assert rec.choice == "b"
    assert rec.reasons[0] == (
        "B: quality not compared (no test file, no trainer-logged eval_loss), 50 % smaller size"
    )


@pytest.mark.parametrize("field", ["decode_speed", "size", "min_relative_difference"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_weights_reject_what_cannot_weigh(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"\[compare\] {field} must be a number >= 0"):
        RecommendWeights(**{field: value})
