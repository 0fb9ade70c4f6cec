"""The `[anomaly]` section: every detector threshold as one flat key, units in the names.

config.toml documents each key with the same defaults (a test keeps them equal). The defaults
were tuned with `bench/anomaly_quality.py` on its development seeds; docs/benchmarks.md reports
the held-out figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    enabled: bool = True
    # Kinds to switch off: non_finite, loss_spike, divergence, inverted_loss, zscore,
    # accuracy_drop, stall, best_model.
    disabled_kinds: tuple[str, ...] = ()

    # Points carrying a metric before it is judged (train metrics / eval metrics).
    warmup_points: int = 20
    eval_warmup_points: int = 3

    non_finite_metrics: tuple[str, ...] = ("loss", "eval_loss", "grad_norm")

    spike_metrics: tuple[str, ...] = ("loss", "eval_loss")
    spike_window_points: int = 50
    spike_eval_window_points: int = 10
    spike_mad_z: float = 5.0
    spike_min_rise: float = 0.5
    spike_ratio: float = 10.0

    divergence_metric: str = "loss"
    divergence_ewma_alpha: float = 0.3
    divergence_min_rise: float = 0.3
    divergence_sigmas: float = 10.0
    divergence_points: int = 3

    inverted_evals: int = 3
    inverted_min_rise: float = 0.02
    inverted_reward_points: int = 10

    zscore_metrics: tuple[str, ...] = ("grad_norm",)
    zscore_window_points: int = 100
    zscore_warmup_points: int = 50
    zscore_sigmas: float = 5.0
    zscore_severity: Literal["normal", "critical"] = "normal"

    accuracy_metrics: tuple[str, ...] = ("accuracy", "eval_accuracy")
    accuracy_drop_points: float = 5.0
    accuracy_sigmas: float = 8.0
    accuracy_window_points: int = 200
    accuracy_ewma_alpha: float = 0.1

    stall_minutes: float = 30.0

    best_min_improvement: float = 0.005
    best_ewma_alpha: float = 0.1
    best_train_interval_s: float = 900.0

    quiet_points: int = 10
    quiet_eval_points: int = 2
    cooldown_s: float = 600.0
