"""GPU memory through NVML: readings where a GPU and its driver exist, nothing (quietly) where not.

PyTorch's caching allocator keeps what it freed, so a busy GPU often looks nearly full; only
`warn_fraction` (default 0.97) and above is told, as a normal (not critical) alert.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from tunewatch.plugins.resources.findings import Finding, fmt_bytes


@dataclass(frozen=True, slots=True)
class GpuMemory:
    index: int
    used_bytes: int
    total_bytes: int

    @property
    def name(self) -> str:
        return f"gpu{self.index}"


class GpuReader:
    """Reads each GPU's memory; NVML is loaded on the first read and never again if it fails."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self._handles: list[Any] | None = None
        self._unavailable = False

    def read(self) -> list[GpuMemory]:
        handles = self._open()
        if not handles:
            return []
        pynvml = _nvml()
        readings = []
        for index, handle in enumerate(handles):
            try:
                info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            except pynvml.NVMLError:
                continue  # a GPU fallen off the bus says so in the kernel log, not here
            readings.append(GpuMemory(index, int(info.used), int(info.total)))
        return readings

    def close(self) -> None:
        if self._handles is None:
            return
        pynvml = _nvml()
        with contextlib.suppress(pynvml.NVMLError):
            pynvml.nvmlShutdown()
        self._handles = None

    def _open(self) -> list[Any]:
        if self._handles is not None or self._unavailable:
            return self._handles or []
        try:
            pynvml = _nvml()
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # no library, no driver, no GPU: all mean "no GPU alerts"
            self._unavailable = True
            self.log.info("no GPU memory alerts: NVML is not available", reason=str(exc))
            return []
        return self._handles


def _nvml() -> Any:
    # Imported on first use: a machine with no GPU never loads it.
    import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships no type hints

    return pynvml


def judge_gpu(reading: GpuMemory, warn_fraction: float) -> Finding | None:
    if reading.total_bytes <= 0:
        return None
    used = reading.used_bytes / reading.total_bytes
    if used < warn_fraction:
        return None
    return Finding(
        resource="gpu_memory",
        severity="normal",
        summary=(
            f"{reading.name} memory {used:.0%} used "
            f"({fmt_bytes(reading.total_bytes - reading.used_bytes)} free)"
        ),
        advice=(
            "A longer batch may not fit (CUDA out of memory). If the run has not failed, this "
            "may be PyTorch's cache; otherwise lower the batch size or sequence length, or turn "
            "on gradient checkpointing."
        ),
        path=reading.name,
        value=used,
    )
