"""The `[anomaly]` section: every detector threshold as one flat key, units in the names.

config.toml documents each key with the same defaults (a test keeps them equal). The defaults
were tuned with `bench/anomaly_quality.py` on its development seeds; docs/benchmarks.md reports
the held-out figures. A value no detector can work with (a window too short for its statistic)
is refused by name when the config is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from tunewatch.daemon.config import AtLeast, AtMost, GreaterThan, PositiveInt
from tunewatch.plugins.anomaly.spike import MIN_WINDOW as SPIKE_MIN_WINDOW
from tunewatch.plugins.anomaly.zscore import MIN_WINDOW as ZSCORE_MIN_WINDOW

# The weight of the newest point in an EWMA: 0 would never move, above 1 would overshoot.
EwmaWeight = Annotated[float, GreaterThan(0), AtMost(1)]


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    enabled: bool = True
    # Kinds to switch off: non_finite, loss_spike, divergence, inverted_loss, zscore,
    # accuracy_drop, not_learning, stall, best_model.
    disabled_kinds: tuple[str, ...] = ()

    # Points carrying a metric before it is judged (train metrics / eval metrics).
    warmup_points: int = 20
    eval_warmup_points: int = 3

    # Metric lists take patterns: `eval_*_loss` is the eval loss of each dataset evaluated.
    non_finite_metrics: tuple[str, ...] = ("loss", "eval_loss", "eval_*_loss", "grad_norm")
    # A non-finite value of a metric that is not a loss (grad_norm) is info until it lasts
    # this many logged points: fp16 training skips an overflowing step by design.
    non_finite_persist_points: PositiveInt = 3

    spike_metrics: tuple[str, ...] = ("loss", "eval_loss", "eval_*_loss")
    # A rolling median needs a few points; a shorter window would never judge (spikes off).
    spike_window_points: Annotated[int, AtLeast(SPIKE_MIN_WINDOW)] = 50
    spike_eval_window_points: Annotated[int, AtLeast(SPIKE_MIN_WINDOW)] = 10
    spike_mad_z: float = 5.0
    spike_min_rise: float = 0.5
    # At 1 or below, any point above its median would be a spike.
    spike_ratio: Annotated[float, GreaterThan(1)] = 10.0
    # A spike is info; it is critical when the loss has not come back after this many points
    # (train) or evaluations (eval).
    spike_recover_points: PositiveInt = 10
    spike_recover_evals: PositiveInt = 2

    divergence_metric: str = "loss"
    divergence_ewma_alpha: EwmaWeight = 0.3
    divergence_min_rise: float = 0.3
    divergence_sigmas: float = 10.0
    divergence_points: PositiveInt = 3

    inverted_evals: PositiveInt = 3
    inverted_min_rise: float = 0.02
    # A mean's standard error needs two points; with one, any negative margin would alert.
    inverted_reward_points: Annotated[int, AtLeast(2)] = 10

    zscore_metrics: tuple[str, ...] = ("grad_norm",)
    zscore_window_points: Annotated[int, AtLeast(ZSCORE_MIN_WINDOW)] = 100
    zscore_warmup_points: int = 50
    # Nothing else guards this detector: at 0 sigmas every point off the mean is an outlier.
    zscore_sigmas: Annotated[float, GreaterThan(0)] = 5.0
    zscore_severity: Literal["info", "normal", "critical"] = "info"

    accuracy_metrics: tuple[str, ...] = ("accuracy", "eval_accuracy")
    accuracy_drop_points: float = 5.0
    accuracy_sigmas: float = 8.0
    accuracy_window_points: PositiveInt = 200
    accuracy_ewma_alpha: EwmaWeight = 0.1

    # A loss improved by less than this (relative to its start) after not_learning_points
    # train points and not_learning_evals evaluations: the run is not learning. Past 0.5,
    # a run that halves its loss would be said not to learn.
    not_learning_min_improvement: Annotated[float, GreaterThan(0), AtMost(0.5)] = 0.05
    # (At least twice the warm-up is waited for: its median is the start to compare with.)
    not_learning_points: PositiveInt = 100
    not_learning_evals: PositiveInt = 6

    stall_minutes: float = 30.0  # 0: no stall alert for silence

    best_min_improvement: float = 0.005
    best_ewma_alpha: EwmaWeight = 0.1
    best_train_interval_s: float = 900.0

    # Points without the condition before an alert is resolved: 0 would resolve it at once.
    quiet_points: PositiveInt = 10
    quiet_eval_points: PositiveInt = 2
    cooldown_s: float = 600.0
