"""The [resources] section: how often to sample, and when a resource running out is told."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from tunewatch.daemon.config import AtMost, GreaterThan, PositiveFloat, PositiveInt

Fraction = Annotated[float, GreaterThan(0), AtMost(1)]


@dataclass(frozen=True, slots=True)
class ResourcesConfig:
    enabled: bool = True
    interval_s: PositiveFloat = 300.0
    disk_warn_hours: PositiveFloat = 2.0
    forecast_window_s: PositiveFloat = 3600.0
    memory_warn_fraction: Fraction = 0.9
    memory_warn_hours: PositiveFloat = 1.0
    gpu: bool = True
    gpu_warn_fraction: Fraction = 0.97
    recover_samples: PositiveInt = 3
    cooldown_s: float = 3600.0
