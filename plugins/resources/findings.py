"""A finding: one resource that is running out now, as the watches report it every sample."""

from __future__ import annotations

from dataclasses import dataclass

from tunewatch.daemon.events import Severity

# (resource, path, run): what one episode is about, e.g. ("disk", "/data", None).
FindingKey = tuple[str, str | None, str | None]


@dataclass(frozen=True, slots=True)
class Finding:
    """A resource over its threshold (or forecast to be soon) at one sample."""

    resource: str  # "disk", "memory", "trainer_memory", "gpu_memory"
    severity: Severity
    summary: str
    advice: str
    path: str | None = None
    run: str | None = None
    value: float | None = None  # the fraction used now

    @property
    def key(self) -> FindingKey:
        return (self.resource, self.path, self.run)


def fmt_bytes(count: float) -> str:
    """Bytes as a person reads them: 512 B, 3.1 MiB, 4.2 GiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
