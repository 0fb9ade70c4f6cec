"""From findings to what a person receives: the `AlertGate`, and `RunDetectors`, the entry point.

Detectors report a condition on every point while it holds. The gate turns that level into
one `Alert` per episode of (kind, metric), counts the repeats, and ends each episode with one
`Recovery` when the condition has been absent for a while. Every episode is recorded; whether
a person is told (`push`) is decided here too: never for `info` findings, and not again within
`cooldown_s` of the last push for the same (kind, metric), on the points' own clock, nor while
a pushed episode of the same incident is in progress or was pushed within `cooldown_s`
(`INCIDENTS`: a loss that diverges spikes on the way up, and drags the eval loss with it; a NaN
loss makes the eval loss NaN too; a person wants each told once).
`RunDetectors` bundles every detector of one run with the best-model tracker and the gate: the
plugin feeds it points and publishes its verdicts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, cast

from tunewatch.plugins.anomaly.accuracy import AccuracyDropDetector
from tunewatch.plugins.anomaly.base import (
    Detector,
    Finding,
    JudgedAtEnd,
    NewBest,
    Point,
    is_pattern,
)
from tunewatch.plugins.anomaly.best import BestModelTracker
from tunewatch.plugins.anomaly.config import AnomalyConfig
from tunewatch.plugins.anomaly.divergence import DivergenceDetector
from tunewatch.plugins.anomaly.inverted import InvertedLossDetector
from tunewatch.plugins.anomaly.non_finite import NonFiniteDetector
from tunewatch.plugins.anomaly.not_learning import LossProgress, NotLearningDetector
from tunewatch.plugins.anomaly.per_metric import PerMetric
from tunewatch.plugins.anomaly.spike import LossSpikeDetector
from tunewatch.plugins.anomaly.zscore import ZScoreDetector

# Kinds that are one incident whatever the metric: while an episode of one of them is pushed
# and in progress, or within `cooldown_s` of its push, another is recorded, not pushed. A NaN
# loss makes the weights NaN, so the eval loss (and each eval set's) turns NaN at the next
# evaluation: the same incident, told once (a Lightning run pushed both, seconds apart).
INCIDENTS = ({"loss_spike", "divergence"}, {"non_finite"})

# Bumped whenever the shape of `RunDetectors.state()` changes incompatibly.
STATE_VERSION = 1
BEST_MODEL = "best_model"


@dataclass(frozen=True, slots=True)
class Alert:
    """The first finding of an episode (recorded), and whether a person is told now."""

    finding: Finding
    push: bool = True


@dataclass(frozen=True, slots=True)
class Recovery:
    """An episode is over; `findings` is how many points reported it. `push` when its alert
    was pushed (a person who was told it started is told it ended)."""

    kind: str
    metric: str
    step: int
    findings: int
    push: bool = True


@dataclass(frozen=True, slots=True)
class GateCounts:
    """Per (kind, metric), for the daily report: episodes, repeats and pushes held back."""

    alerts: int = 0  # episodes recorded
    repeats: int = 0  # findings while an episode was already active
    suppressed: int = 0  # episodes not pushed: within `cooldown_s` of the last push, or
    # part of an incident already pushed


@dataclass(slots=True)
class _Episode:
    active: bool = False
    alerted: bool = False  # whether this episode was pushed (so its recovery is too)
    quiet: int = 0  # consecutive points carrying the metric without a finding
    findings: int = 0
    last_alert_time: float | None = None  # of the last push
    alerts: int = 0
    repeats: int = 0
    suppressed: int = 0


class AlertGate:
    """Level findings in, edge alerts and recoveries out, per (kind, metric)."""

    def __init__(self, *, quiet_points: int, quiet_eval_points: int, cooldown_s: float) -> None:
        self.quiet_points = max(1, quiet_points)
        # Evaluations are sparse: waiting for as many of them as train points would keep an
        # eval episode open (and swallow the next one) for a large part of the run.
        self.quiet_eval_points = max(1, quiet_eval_points)
        self.cooldown_s = cooldown_s
        self._episodes: dict[tuple[str, str], _Episode] = {}

    def update(
        self, point: Point, findings: Iterable[Finding]
    ) -> tuple[list[Alert], list[Recovery]]:
        alerts: list[Alert] = []
        fired: set[tuple[str, str]] = set()
        for finding in findings:
            key = (finding.kind, finding.metric)
            if key in fired:
                continue  # one finding per (kind, metric) and point is all the gate needs
            fired.add(key)
            alert = self._on_finding(key, finding, point)
            if alert is not None:
                alerts.append(alert)
        recoveries: list[Recovery] = []
        for (kind, metric), episode in self._episodes.items():
            if not episode.active or (kind, metric) in fired or metric not in point.metrics:
                continue
            episode.quiet += 1
            if episode.quiet < self._quiet_needed(metric):
                continue
            episode.active = False
            recoveries.append(
                Recovery(kind, metric, point.step, episode.findings, push=episode.alerted)
            )
        return alerts, recoveries

    def _on_finding(self, key: tuple[str, str], finding: Finding, point: Point) -> Alert | None:
        """Record one finding; the alert of a new episode (pushed or not), or None."""
        episode = self._episodes.setdefault(key, _Episode())
        episode.quiet = 0
        pushable = finding.severity != "info"
        held = pushable and (
            not self._cooled_down(episode, point.time) or self._told_incident(key, point.time)
        )
        if not episode.active:
            episode.active, episode.alerted, episode.findings = True, False, 1
            episode.alerts += 1
            if held:
                episode.suppressed += 1
                return Alert(finding, push=False)
            return Alert(finding, push=pushable and self._push(episode, point.time))
        episode.findings += 1
        if episode.alerted or not pushable or held:
            episode.repeats += 1
            return None
        # An episode held back (by the cooldown, or recorded as info) that is still going, and
        # now worth a push, is news: a person must not believe the earlier recovery, and a
        # spike that did not come back is no longer a bad batch.
        return Alert(finding, push=self._push(episode, point.time))

    def _told_incident(self, key: tuple[str, str], now: float) -> bool:
        """Whether another episode of the same incident was pushed and is still in progress,
        or was pushed within `cooldown_s`."""
        kinds = next((group for group in INCIDENTS if key[0] in group), None)
        if kinds is None:
            return False
        return any(
            other != key
            and other[0] in kinds
            and e.last_alert_time is not None
            and ((e.active and e.alerted) or now - e.last_alert_time < self.cooldown_s)
            for other, e in self._episodes.items()
        )

    def _push(self, episode: _Episode, now: float) -> bool:
        episode.alerted, episode.last_alert_time = True, now
        return True

    def _cooled_down(self, episode: _Episode, now: float) -> bool:
        last = episode.last_alert_time
        return last is None or now - last >= self.cooldown_s

    def _quiet_needed(self, metric: str) -> int:
        return self.quiet_eval_points if metric.startswith("eval_") else self.quiet_points

    def counts(self) -> dict[tuple[str, str], GateCounts]:
        return {
            key: GateCounts(e.alerts, e.repeats, e.suppressed) for key, e in self._episodes.items()
        }

    def active(self) -> list[tuple[str, str]]:
        """The (kind, metric) episodes in progress."""
        return [key for key, e in self._episodes.items() if e.active]

    def state(self) -> dict[str, Any]:
        return {
            "episodes": [[kind, metric, asdict(e)] for (kind, metric), e in self._episodes.items()]
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        names = {f.name for f in fields(_Episode)}
        self._episodes = {
            (str(kind), str(metric)): _Episode(**{k: v for k, v in data.items() if k in names})
            for kind, metric, data in state["episodes"]
        }


@dataclass(frozen=True, slots=True)
class RunVerdict:
    """What one point produced: alerts to send, recoveries to announce, maybe a new best."""

    alerts: tuple[Alert, ...] = ()
    recoveries: tuple[Recovery, ...] = ()
    new_best: NewBest | None = None


class RunDetectors:
    """Every detector of one run, the best-model tracker and the gate, built from the config."""

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self._build()

    def _build(self) -> None:
        config = self.config
        self.detectors = build_detectors(config)
        # Those with something to say at the run's end.
        self._end_judges = [
            cast(JudgedAtEnd, d) for d in self.detectors.values() if _judges_at_end(type(d))
        ]
        self.best: BestModelTracker | None = None
        if BEST_MODEL not in config.disabled_kinds:
            self.best = BestModelTracker(
                min_improvement=config.best_min_improvement,
                alpha=config.best_ewma_alpha,
                warmup_points=config.warmup_points,
                poison_metrics=config.non_finite_metrics,
                persist_points=config.non_finite_persist_points,
            )
        self.gate = AlertGate(
            quiet_points=config.quiet_points,
            quiet_eval_points=config.quiet_eval_points,
            cooldown_s=config.cooldown_s,
        )

    def update(self, point: Point) -> RunVerdict:
        findings = [f for detector in self.detectors.values() for f in detector.update(point)]
        alerts, recoveries = self.gate.update(point, findings)
        new_best = self.best.update(point) if self.best is not None else None
        return RunVerdict(tuple(alerts), tuple(recoveries), new_best)

    def end_may_tell(self) -> bool:
        """Whether `end` could say anything if the run ended now (cheap)."""
        return any(judge.end_may_tell() for judge in self._end_judges)

    def end(self, step: int, time: float) -> tuple[Alert, ...]:
        """What the run's end tells (it finished, or went silent after `step`, logged at
        `time`), through the same gate as any finding."""
        findings = [f for judge in self._end_judges for f in judge.at_end(step)]
        # A point without metrics: the end ends no episode, it only may start one.
        return tuple(self.gate.update(Point(step, {}, time), findings)[0])

    def state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "detectors": {name: d.state() for name, d in self.detectors.items()},
            "best": self.best.state() if self.best is not None else None,
            "gate": self.gate.state(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from `state()`; raises ValueError for a state this version cannot use,
        leaving every detector fresh (never half restored).

        A detector added to the config since the state was saved starts fresh.
        """
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"detector state version {state.get('version')!r} is not supported")
        try:
            saved = state["detectors"]
            for name, detector in self.detectors.items():
                if name in saved:
                    detector.restore(saved[name])
            if self.best is not None and state["best"] is not None:
                self.best.restore(state["best"])
            self.gate.restore(state["gate"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self._build()
            raise ValueError(f"unusable detector state: {type(exc).__name__}: {exc}") from None


@functools.cache
def _judges_at_end(detector: type) -> bool:
    # Per class, once: a runtime protocol check costs ~10 µs, and every run builds its detectors
    # (ten thousand runs at a first start).
    return issubclass(detector, JudgedAtEnd)


def build_detectors(config: AnomalyConfig) -> dict[str, Detector]:
    """The enabled detectors, keyed by a stable name (their state is saved under it)."""
    c = config
    detectors: dict[str, Detector] = {
        "non_finite": NonFiniteDetector(c.non_finite_metrics, c.non_finite_persist_points)
    }
    for metric in c.spike_metrics:
        detectors[f"loss_spike:{metric}"] = _per_metric(
            LossSpikeDetector.kind, metric, lambda m: _spike(c, m)
        )
    detectors["divergence"] = DivergenceDetector(
        c.divergence_metric,
        alpha=c.divergence_ewma_alpha,
        min_rise=c.divergence_min_rise,
        sigmas=c.divergence_sigmas,
        points=c.divergence_points,
        warmup_points=c.warmup_points,
    )
    detectors["inverted_loss"] = InvertedLossDetector(
        evals=c.inverted_evals,
        min_rise=c.inverted_min_rise,
        eval_warmup_points=c.eval_warmup_points,
        reward_points=c.inverted_reward_points,
        warmup_points=c.warmup_points,
    )
    for metric in c.zscore_metrics:
        detectors[f"zscore:{metric}"] = ZScoreDetector(
            metric,
            window_points=c.zscore_window_points,
            warmup_points=c.zscore_warmup_points,
            sigmas=c.zscore_sigmas,
            severity=c.zscore_severity,
        )
    detectors["accuracy_drop"] = AccuracyDropDetector(
        c.accuracy_metrics,
        drop_points=c.accuracy_drop_points,
        sigmas=c.accuracy_sigmas,
        window_points=c.accuracy_window_points,
        alpha=c.accuracy_ewma_alpha,
        warmup_points=c.warmup_points,
        eval_warmup_points=c.eval_warmup_points,
        progress=_progress(c),
    )
    detectors["not_learning"] = NotLearningDetector(_progress(c))
    return {name: d for name, d in detectors.items() if d.kind not in c.disabled_kinds}


def _per_metric(kind: str, metric: str, make: Callable[[str], Detector]) -> Detector:
    """The detector of `metric`, or of each metric matching it when it is a pattern."""
    return PerMetric(kind, metric, make) if is_pattern(metric) else make(metric)


def _spike(c: AnomalyConfig, metric: str) -> LossSpikeDetector:
    is_eval = metric.startswith("eval_")
    return LossSpikeDetector(
        metric,
        window_points=c.spike_eval_window_points if is_eval else c.spike_window_points,
        warmup_points=c.eval_warmup_points if is_eval else c.warmup_points,
        mad_z=c.spike_mad_z,
        min_rise=c.spike_min_rise,
        ratio=c.spike_ratio,
        recover_points=c.spike_recover_evals if is_eval else c.spike_recover_points,
    )


def _progress(c: AnomalyConfig) -> LossProgress:
    """A judge of whether the run learns (each detector that asks keeps its own)."""
    return LossProgress(
        min_improvement=c.not_learning_min_improvement,
        points=c.not_learning_points,
        evals=c.not_learning_evals,
        warmup_points=c.warmup_points,
        eval_warmup_points=c.eval_warmup_points,
    )
