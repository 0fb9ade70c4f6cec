"""How much speed and size count in a recommendation once quality does not decide.

Apart from `recommend` so that the daemon can validate `[compare]` without importing numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RecommendWeights:
    """How much each figure counts once quality does not decide ([compare] in the config)."""

    decode_speed: float = 1.0  # generation is where a person waits
    prefill_speed: float = 0.25  # long prompts, short answers
    size: float = 0.5  # disk and memory; weights files only
    # A relative difference below this is noise or does not matter to anyone: "same".
    min_relative_difference: float = 0.05
    # Trainer-logged eval_loss (without a test file) ties below this relative difference: it
    # comes with no significance test, so only a clear gap counts.
    min_eval_loss_difference: float = 0.01

    def __post_init__(self) -> None:
        for name in self.__slots__:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"[compare] {name} must be a number >= 0, got {value!r}")
