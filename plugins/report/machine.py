"""The machine's memory and GPUs for the report: psutil for RAM, NVML (nvidia-ml-py) for GPUs.

NVML is the driver's own library: it reads memory and utilisation without importing torch or
touching a CUDA context. A box without a GPU or driver gets "no GPU", never an error.
"""

from __future__ import annotations

from typing import Any

import psutil
import structlog

from tunewatch.plugins.report.model import Gpu, HostMemory

log = structlog.get_logger(__name__)
NO_GPU = "no GPU"


def host_memory() -> HostMemory | None:
    try:
        memory = psutil.virtual_memory()
    except OSError:
        return None
    return HostMemory(
        total_bytes=int(memory.total),
        available_bytes=int(memory.available),
        used_fraction=float(memory.percent) / 100.0,
    )


def gpus() -> tuple[tuple[Gpu, ...], str]:
    """Each GPU NVML sees, and a note: "no GPU" when there is none to show (no driver...)."""
    try:
        import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships no type hints
    except ImportError:
        return (), NO_GPU
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound, DriverNotLoaded...: an ordinary CPU box
        return (), NO_GPU
    try:
        found = tuple(_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount()))
    except Exception as exc:  # a GPU that fell off the bus must not cost the report
        log.warning("cannot read the GPUs through NVML", error=str(exc))
        return (), NO_GPU
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            log.debug("nvmlShutdown failed", exc_info=True)
    return found, "" if found else NO_GPU


def _gpu(nvml: Any, index: int) -> Gpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        utilisation: int | None = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # not supported on some boards (MIG slices): memory is still worth showing
        utilisation = None
    return Gpu(
        index=index,
        name=name.decode() if isinstance(name, bytes) else str(name),
        memory_used_bytes=int(memory.used),
        memory_total_bytes=int(memory.total),
        utilisation_percent=utilisation,
    )
