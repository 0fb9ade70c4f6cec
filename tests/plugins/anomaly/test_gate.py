"""The gate turns findings into what a person receives; RunDetectors is the plugin's entry point."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from fixtures.loss_curves import BATCH_SIZES, CurveSpec, clean_points, random_spec
from fixtures.rl_logs import dpo_points, grpo_points
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.config import AnomalyConfig
from tunewatch.plugins.anomaly.gate import (
    Alert,
    AlertGate,
    GateCounts,
    Recovery,
    RunDetectors,
    RunVerdict,
)


def gate(cooldown_s: float = 600.0) -> AlertGate:
    return AlertGate(quiet_points=3, quiet_eval_points=1, cooldown_s=cooldown_s)


def finding(step: int, kind: str = "loss_spike", metric: str = "loss") -> Finding:
    return Finding(kind, "critical", metric, 9.0, 1.0, "spike", step)


class Feed:
    """Drives a gate one point at a time, a second per step."""

    def __init__(self, g: AlertGate) -> None:
        self.g, self.step = g, 0
        self.alerts: list[Alert] = []
        self.recoveries: list[Recovery] = []

    def point(self, *found: Finding, metrics: Sequence[str] = ("loss",), dt: float = 1.0) -> None:
        self.step += 1
        point = Point(self.step, dict.fromkeys(metrics, 1.0), 1000.0 + self.step * dt)
        alerts, recoveries = self.g.update(point, [replace(f, step=self.step) for f in found])
        self.alerts += alerts
        self.recoveries += recoveries


def test_a_condition_is_alerted_once_and_its_repeats_are_counted() -> None:
    feed = Feed(gate())
    for _ in range(5):
        feed.point(finding(0))
    assert [a.finding.step for a in feed.alerts] == [1]
    assert feed.g.counts() == {("loss_spike", "loss"): GateCounts(alerts=1, repeats=4)}
    assert feed.g.active() == [("loss_spike", "loss")]


def test_one_recovery_after_quiet_points_carrying_the_metric() -> None:
    feed = Feed(gate())
    feed.point(finding(0))
    feed.point(metrics=("eval_loss",))  # does not carry `loss`: does not count as quiet
    feed.point()
    feed.point()
    assert feed.recoveries == []
    feed.point()
    assert feed.recoveries == [Recovery("loss_spike", "loss", step=5, findings=1)]
    feed.point()
    assert len(feed.recoveries) == 1
    assert feed.g.active() == []


def test_a_finding_during_the_quiet_stretch_keeps_the_episode_open() -> None:
    feed = Feed(gate())
    for found in ([finding(0)], [], [], [finding(0)], [], []):
        feed.point(*found)
    assert feed.recoveries == [] and len(feed.alerts) == 1


def test_eval_metrics_recover_after_fewer_points() -> None:
    feed = Feed(gate())
    feed.point(finding(0, metric="eval_loss"), metrics=("eval_loss",))
    feed.point(metrics=("eval_loss",))
    assert [r.metric for r in feed.recoveries] == ["eval_loss"]


def test_a_re_trigger_within_the_cooldown_is_recorded_but_not_pushed() -> None:
    feed = Feed(gate(cooldown_s=600.0))
    feed.point(finding(0))
    for _ in range(3):
        feed.point()
    assert len(feed.recoveries) == 1
    feed.point(finding(0))  # 5 s after the alert
    assert [(a.finding.step, a.push) for a in feed.alerts] == [(1, True), (5, False)]
    assert feed.g.counts()[("loss_spike", "loss")] == GateCounts(alerts=2, repeats=0, suppressed=1)
    for _ in range(3):
        feed.point()
    # Every episode is in the history; nobody was told this one started, so not that it ended.
    assert [(r.step, r.push) for r in feed.recoveries] == [(4, True), (8, False)]


def test_info_findings_are_recorded_and_never_pushed() -> None:
    feed = Feed(gate())
    outlier = Finding("zscore", "info", "grad_norm", 9.0, 1.0, "outlier", 0)
    feed.point(outlier, metrics=("grad_norm",))
    for _ in range(3):
        feed.point(metrics=("grad_norm",))
    assert [(a.finding.kind, a.push) for a in feed.alerts] == [("zscore", False)]
    assert [r.push for r in feed.recoveries] == [False]


def test_three_episodes_minutes_apart_are_three_events_and_one_push_each_cooldown() -> None:
    """NaN at steps 50, 150 and 250 of one run: the history keeps all three."""
    feed = Feed(gate(cooldown_s=600.0))
    for step in range(1, 301):
        if step in (50, 150, 250):
            feed.point(finding(0, kind="non_finite"), dt=2.0)
        else:
            feed.point(dt=2.0)
    assert [a.finding.step for a in feed.alerts] == [50, 150, 250]
    # 2 s a point: 150 is 200 s after 50 (held back), 250 is 400 s after 50 (held back too).
    assert [a.push for a in feed.alerts] == [True, False, False]


def test_after_the_cooldown_a_new_episode_is_alerted_again() -> None:
    feed = Feed(gate(cooldown_s=600.0))
    feed.point(finding(0))
    for _ in range(3):
        feed.point(dt=100.0)
    feed.point(finding(0), dt=400.0)
    assert [a.finding.step for a in feed.alerts] == [1, 5]


def test_a_held_back_episode_still_going_after_the_cooldown_is_sent() -> None:
    feed = Feed(gate(cooldown_s=600.0))
    feed.point(finding(0))
    for _ in range(3):
        feed.point()
    for _ in range(3):
        feed.point(finding(0), dt=150.0)  # re-triggered at once, still there 10 minutes later
    assert len(feed.alerts) == 2
    for _ in range(3):
        feed.point()
    assert len(feed.recoveries) == 2


def test_kinds_and_metrics_are_gated_independently() -> None:
    feed = Feed(gate())
    feed.point(finding(0), finding(0, kind="zscore", metric="grad_norm"), finding(0))
    assert sorted((a.finding.kind, a.finding.metric) for a in feed.alerts) == [
        ("loss_spike", "loss"),
        ("zscore", "grad_norm"),
    ]


def test_one_incident_is_pushed_once_whatever_kinds_and_metrics_tell_it() -> None:
    # A diverging loss: divergence is pushed; the eval loss spiking with it, and the train loss
    # spike that did not come back, are the same incident: recorded, not pushed again.
    feed = Feed(gate())
    feed.point(finding(0, kind="divergence"), metrics=("loss",))
    feed.point(
        finding(0, kind="divergence"), finding(0, metric="eval_loss"), metrics=("loss", "eval_loss")
    )
    feed.point(finding(0, kind="divergence"), finding(0), metrics=("loss",))
    assert [(a.finding.kind, a.finding.metric, a.push) for a in feed.alerts] == [
        ("divergence", "loss", True),
        ("loss_spike", "eval_loss", False),
        ("loss_spike", "loss", False),
    ]
    assert feed.g.counts()[("loss_spike", "loss")].suppressed == 1
    # Other kinds are news of their own: a NaN loss on top of the divergence is pushed.
    feed.point(finding(0, kind="divergence"), finding(0, kind="non_finite"))
    assert (feed.alerts[-1].finding.kind, feed.alerts[-1].push) == ("non_finite", True)
    # Once the divergence is over, and told more than `cooldown_s` ago, a new spike that does
    # not come back is news again.
    for _ in range(3):
        feed.point()
    assert ("divergence", "loss") not in feed.g.active()
    feed.point(finding(0, metric="grad_norm"), metrics=("grad_norm",))
    assert not feed.alerts[-1].push
    feed.point(finding(0, metric="eval_g1_loss"), metrics=("eval_g1_loss",), dt=700.0)
    assert (feed.alerts[-1].finding.metric, feed.alerts[-1].push) == ("eval_g1_loss", True)


def test_a_nan_loss_and_the_nan_eval_losses_it_causes_are_pushed_once() -> None:
    # Seen on a real Lightning run: NaN weights make every later evaluation NaN too.
    feed = Feed(gate())
    nan = replace(finding(0, kind="non_finite"), value=math.nan)
    feed.point(nan, metrics=("loss",))
    feed.point(replace(nan, metric="eval_loss"), metrics=("loss", "eval_loss"))
    feed.point(replace(nan, metric="eval_g1_loss"), metrics=("eval_g1_loss",))
    assert [(a.finding.metric, a.push) for a in feed.alerts] == [
        ("loss", True),
        ("eval_loss", False),
        ("eval_g1_loss", False),
    ]
    # Every episode is still in the record; a NaN after the incident is over and its cooldown
    # has passed is news again.
    assert set(feed.g.counts()) == {
        ("non_finite", "loss"),
        ("non_finite", "eval_loss"),
        ("non_finite", "eval_g1_loss"),
    }
    for _ in range(4):
        feed.point(metrics=("loss", "eval_loss", "eval_g1_loss"))
    assert feed.g.active() == []
    feed.point(replace(nan, metric="eval_loss"), metrics=("eval_loss",), dt=700.0)
    assert (feed.alerts[-1].finding.metric, feed.alerts[-1].push) == ("eval_loss", True)


def test_an_info_episode_that_turns_critical_is_pushed_then() -> None:
    # A spike is info; when the loss has not come back, the same episode becomes critical.
    feed = Feed(gate())
    feed.point(replace(finding(0), severity="info"))
    feed.point()
    feed.point(finding(0))
    feed.point(finding(0))
    assert [(a.finding.step, a.finding.severity, a.push) for a in feed.alerts] == [
        (1, "info", False),
        (3, "critical", True),
    ]
    assert feed.g.counts()[("loss_spike", "loss")] == GateCounts(alerts=1, repeats=1)


def test_gate_state_round_trip_continues_identically() -> None:
    pattern = [[finding(0)], [], [finding(0)], [], [], [], [finding(0)], [], [], [], []]
    straight = Feed(gate(cooldown_s=5.0))
    for found in pattern:
        straight.point(*found)
    first = Feed(gate(cooldown_s=5.0))
    for found in pattern[:5]:
        first.point(*found)
    second = Feed(gate(cooldown_s=5.0))
    second.g.restore(json.loads(json.dumps(first.g.state())))
    second.step = first.step
    for found in pattern[5:]:
        second.point(*found)
    assert first.alerts + second.alerts == straight.alerts
    assert first.recoveries + second.recoveries == straight.recoveries
    assert second.g.counts() == straight.g.counts()


# -- RunDetectors ---------------------------------------------------------------------------------


def verdicts(run: RunDetectors, points: Sequence[Point]) -> list[RunVerdict]:
    return [run.update(p) for p in points]


def alerted(found: Sequence[RunVerdict]) -> list[tuple[int, str, str]]:
    return [(a.finding.step, a.finding.kind, a.finding.metric) for v in found for a in v.alerts]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_a_clean_run_produces_no_alert_at_all(batch_size: int) -> None:
    for seed in range(2):
        spec = CurveSpec(
            steps=2000, batch_size=batch_size, eval_every=100, accuracy=True, seed=seed
        )
        found = verdicts(RunDetectors(AnomalyConfig()), clean_points(spec))
        assert alerted(found) == []
        assert any(v.new_best is not None for v in found)


def test_a_nan_run_alerts_once_and_recovers_when_values_are_finite_again() -> None:
    points = clean_points(CurveSpec(steps=300, batch_size=8, eval_every=0, seed=1))
    broken = [
        Point(p.step, {**p.metrics, "grad_norm": math.nan}, p.time) if 100 <= p.step < 150 else p
        for p in points
    ]
    found = verdicts(RunDetectors(AnomalyConfig()), broken)
    # The first NaN grad norm with a finite loss may be an fp16 overflow: recorded, not pushed;
    # the third in a row is pushed, once.
    assert [
        (a.finding.step, a.finding.metric, a.finding.severity, a.push)
        for v in found
        for a in v.alerts
    ] == [(100, "grad_norm", "info", False), (102, "grad_norm", "critical", True)]
    recoveries = [r for v in found for r in v.recoveries]
    assert recoveries == [Recovery("non_finite", "grad_norm", step=159, findings=50)]


@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("seed", range(6))
def test_an_rl_objective_around_zero_raises_no_alert(beta: float, seed: int) -> None:
    # A GRPO loss at its rounding floor, crossing zero, with a KL term that grows by design.
    points = grpo_points(beta=beta, seed=seed)
    assert alerted(verdicts(RunDetectors(AnomalyConfig()), points)) == []


@pytest.mark.parametrize("seed", range(4))
def test_a_dpo_run_raises_no_alert(seed: int) -> None:
    assert alerted(verdicts(RunDetectors(AnomalyConfig()), dpo_points(seed=seed))) == []


def test_the_eval_loss_of_each_evaluated_dataset_is_judged_as_an_eval_loss() -> None:
    # Trainer(eval_dataset={"g0": ..., "g1": ...}) logs eval_g0_loss and eval_g1_loss only.
    points = []
    for p in clean_points(CurveSpec(steps=2000, batch_size=8, eval_every=100, seed=3)):
        if "eval_loss" in p.metrics:
            level = p.metrics["eval_loss"]
            g1 = 1.3 * level * (4.0 if p.step == 1500 else 1.0)
            g0 = math.nan if p.step >= 1800 else level
            p = Point(p.step, {"eval_g0_loss": g0, "eval_g1_loss": g1}, p.time)
        points.append(p)
    found = verdicts(RunDetectors(AnomalyConfig()), points)
    assert [
        (a.finding.step, a.finding.kind, a.finding.metric, a.push) for v in found for a in v.alerts
    ] == [
        # A bad evaluation of one dataset that the next ones do not repeat: recorded only.
        (1500, "loss_spike", "eval_g1_loss", False),
        (1800, "non_finite", "eval_g0_loss", True),
    ]


def test_a_loss_blow_up_records_spike_and_divergence_and_pushes_once() -> None:
    points = clean_points(CurveSpec(steps=400, batch_size=4, eval_every=0, seed=2))
    blown = [
        Point(p.step, {**p.metrics, "loss": p.metrics["loss"] * 30.0}, p.time)
        if p.step > 250
        else p
        for p in points
    ]
    found = verdicts(RunDetectors(AnomalyConfig()), blown)
    kinds = [(step, kind) for step, kind, _ in alerted(found)]
    assert (251, "loss_spike") in kinds
    divergence = [step for step, kind in kinds if kind == "divergence"]
    assert len(divergence) == 1 and 251 <= divergence[0] <= 256
    # One incident, one push: whichever of the two said it first.
    pushes = [a for v in found for a in v.alerts if a.push]
    assert len(pushes) == 1 and pushes[0].finding.kind in ("divergence", "loss_spike")


def test_disabled_kinds_are_not_built() -> None:
    run = RunDetectors(AnomalyConfig(disabled_kinds=("zscore", "loss_spike", "best_model")))
    assert {d.kind for d in run.detectors.values()} == {
        "non_finite",
        "divergence",
        "inverted_loss",
        "accuracy_drop",
        "not_learning",
    }
    assert run.update(Point(1, {"eval_loss": 1.0}, 0.0)).new_best is None


def test_the_whole_bundle_resumes_from_json_exactly() -> None:
    rng = random.Random(8)
    spec = random_spec(rng, steps=1500, eval_every=50, accuracy=True, preference=True)
    points = clean_points(spec)
    points = [
        Point(p.step, {**p.metrics, "loss": p.metrics["loss"] * 8.0}, p.time)
        if "loss" in p.metrics and p.step % 211 == 0
        else p
        for p in points
    ]
    straight = verdicts(RunDetectors(AnomalyConfig()), points)
    assert alerted(straight)  # the comparison must cover alerts, not only silence
    for cut in (37, 400, len(points) - 5):
        first = RunDetectors(AnomalyConfig())
        resumed = verdicts(first, points[:cut])
        second = RunDetectors(AnomalyConfig())
        second.restore(json.loads(json.dumps(first.state())))
        resumed += verdicts(second, points[cut:])
        assert resumed == straight, cut


def test_an_unusable_state_is_rejected_with_a_value_error() -> None:
    run = RunDetectors(AnomalyConfig())
    with pytest.raises(ValueError, match="version"):
        run.restore({"version": 999})
    for step in range(30):
        run.update(Point(step, {"loss": 1.0 + 0.01 * step, "grad_norm": 1.0}, 0.0))
    state = run.state()
    state["gate"] = {"episodes": "garbage"}
    broken = RunDetectors(AnomalyConfig())
    with pytest.raises(ValueError, match="unusable detector state"):
        broken.restore(state)
    # Nothing half restored: the detectors restored before the failure start over too.
    assert broken.state() == RunDetectors(AnomalyConfig()).state()


def test_a_detector_enabled_after_a_restart_starts_fresh() -> None:
    old = RunDetectors(AnomalyConfig(disabled_kinds=("zscore",)))
    for step in range(30):
        old.update(Point(step, {"loss": 1.0, "grad_norm": 1.0}, 0.0))
    new = RunDetectors(AnomalyConfig())
    new.restore(json.loads(json.dumps(old.state())))
    assert new.detectors["zscore:grad_norm"].state()["seen"] == 0


METRICS = ("loss", "eval_loss", "grad_norm", "accuracy", "eval_accuracy", "learning_rate",
           "rewards/chosen", "rewards/rejected")  # fmt: skip
any_float = st.floats(allow_nan=True, allow_infinity=True)
finite_float = st.floats(allow_nan=False, allow_infinity=False)


def curves(values: st.SearchStrategy[float]) -> st.SearchStrategy[list[Point]]:
    point_metrics = st.dictionaries(st.sampled_from(METRICS), values, max_size=len(METRICS))
    return st.lists(point_metrics, max_size=120).map(
        lambda rows: [Point(i, m, 1000.0 + i) for i, m in enumerate(rows)]
    )


SMALL = AnomalyConfig(warmup_points=2, eval_warmup_points=1, zscore_warmup_points=3,
                      spike_window_points=5, zscore_window_points=6, inverted_reward_points=2,
                      quiet_points=2, cooldown_s=3.0)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(curves(finite_float))
def test_random_finite_curves_never_crash_any_detector(points: list[Point]) -> None:
    for config in (AnomalyConfig(), SMALL):
        run = RunDetectors(config)
        for point in points:
            run.update(point)
        json.dumps(run.state())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(curves(any_float))
def test_curves_with_nan_and_inf_never_crash_any_detector(points: list[Point]) -> None:
    run = RunDetectors(SMALL)
    for point in points:
        verdict = run.update(point)
        for alert in verdict.alerts:
            assert alert.finding.kind in {
                "non_finite", "loss_spike", "divergence", "inverted_loss", "zscore",
                "accuracy_drop", "not_learning",
            }  # fmt: skip
    restored = RunDetectors(SMALL)
    restored.restore(json.loads(json.dumps(run.state())))


@settings(max_examples=60, deadline=None)
@given(curves(st.floats(min_value=1e-3, max_value=1e3)), st.integers(min_value=0, max_value=120))
def test_random_curves_resume_identically_from_any_cut(points: list[Point], cut: int) -> None:
    straight = verdicts(RunDetectors(SMALL), points)
    first = RunDetectors(SMALL)
    resumed = verdicts(first, points[:cut])
    second = RunDetectors(SMALL)
    second.restore(json.loads(json.dumps(first.state())))
    resumed += verdicts(second, points[cut:])
    assert resumed == straight


def trainer_points(history: Sequence[dict[str, float]]) -> list[Point]:
    """A Trainer's log history as points, 2 s apart."""
    return [
        Point(int(e["step"]), {k: float(v) for k, v in e.items() if k != "step"}, 2.0 * e["step"])
        for e in history
        if "loss" in e or "eval_loss" in e
    ]


@pytest.mark.slow
def test_a_real_learning_rate_blow_up_is_alerted_and_a_real_clean_run_is_not(
    tmp_path: Path,
) -> None:
    from fixtures.tiny_training import LrBlowUpCallback, train_tiny_run

    clean = train_tiny_run(tmp_path / "clean", max_steps=100, eval_steps=10, save_steps=1000)
    assert alerted(verdicts(RunDetectors(AnomalyConfig()), trainer_points(clean.log_history))) == []

    blown = train_tiny_run(
        tmp_path / "blown",
        max_steps=100,
        eval_steps=10,
        save_steps=1000,
        callbacks=[LrBlowUpCallback(at_step=60, factor=1000.0)],
    )
    found = alerted(verdicts(RunDetectors(AnomalyConfig()), trainer_points(blown.log_history)))
    # The rate changes during step 60: the eval after it and the loss of step 61 show it.
    assert (61, "loss_spike", "loss") in found
    assert (60, "loss_spike", "eval_loss") in found
    divergence = [step for step, kind, _ in found if kind == "divergence"]
    assert len(divergence) == 1 and 61 <= divergence[0] <= 65
