"""What the daemon asks of a comparison child process, and what comes back: JSON files.

The daemon never imports torch: it writes a `ComparisonRequest`, runs
`python -m tunewatch.plugins.compare.child`, and reads a `ComparisonOutcome`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunewatch.daemon.atomic import write_atomic
from tunewatch.plugins.compare.results import Comparison

OutcomeStatus = Literal["ok", "refused", "deferred", "error"]


@dataclass(frozen=True, slots=True)
class ComparisonRequest:
    a: str
    b: str
    test_file: str | None = None
    device: str = "auto"
    max_new_tokens: int = 32
    repeats: int = 5
    warmup: int = 2
    batch_size: int = 1
    examples: int = 5
    gpu_margin_bytes: int = 2 << 30
    when_gpu_short: str = "cpu"
    weights: dict[str, float] = field(default_factory=dict)  # RecommendWeights fields

    def write(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: Path) -> ComparisonRequest:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True, slots=True)
class ComparisonOutcome:
    status: OutcomeStatus
    message: str = ""  # why it was refused, deferred or failed
    comparison: Comparison | None = None

    def write(self, path: Path) -> None:
        data: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.comparison is not None:
            data["comparison"] = self.comparison.to_json()
        write_atomic(path, json.dumps(data, indent=1, allow_nan=True))

    @classmethod
    def read(cls, path: Path) -> ComparisonOutcome:
        data = json.loads(path.read_text(encoding="utf-8"))
        comparison = data.get("comparison")
        return cls(
            data["status"],
            str(data.get("message", "")),
            None if comparison is None else Comparison.from_json(comparison),
        )
