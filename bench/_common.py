"""Helpers shared by the benchmarks: what machine ran them, percentiles, tables, process CPU.

Benchmark figures mean little without the machine that produced them, so every script prints
`machine_description()` first and reports against a competitor measured in the same run.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

MIB = 1024 * 1024


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name", "unknown CPU")
    # Virtual machines often hide the exact model ("AMD EPYC"); family/model/MHz narrow it down.
    extra = [
        f"family {fields['cpu family']} model {fields['model']}"
        if "cpu family" in fields and "model" in fields
        else "",
        f"{float(fields['cpu MHz']):.0f} MHz" if "cpu MHz" in fields else "",
    ]
    detail = ", ".join(e for e in extra if e)
    return f"{model} ({detail})" if detail else model


def machine_description() -> str:
    """One line: CPU model, usable cores, RAM, kernel, Python."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ram_gib = psutil.virtual_memory().total / 1024**3
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return (
        f"{_cpu_model()}, {cores} cores, {ram_gib:.1f} GiB RAM, "
        f"Linux {platform.release()}, {python}"
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default does."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values_ms: Sequence[float]) -> LatencySummary:
        return cls(
            count=len(values_ms),
            p50=percentile(values_ms, 50),
            p90=percentile(values_ms, 90),
            p99=percentile(values_ms, 99),
            max=max(values_ms) if values_ms else math.nan,
        )


def ratio(ours: float, theirs: float) -> str:
    """`ours / theirs` as '3.2x', safe when the competitor measured zero."""
    if theirs <= 0 or math.isnan(theirs) or math.isnan(ours):
        return "n/a"
    return f"{ours / theirs:.1f}x"


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU time of `proc`, all its threads included."""
    times = proc.cpu_times()
    return float(times.user + times.system)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines)


def say(text: str = "") -> None:
    """Progress goes to stderr so that stdout holds only the results."""
    print(text, file=sys.stderr, flush=True)


def wait_ready(
    notify: socket.socket, daemon: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    """Block until the daemon sends READY=1 on `notify` (its NOTIFY_SOCKET, with a timeout set);
    a daemon that exits or takes longer raises, with the end of its log."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"daemon exited {daemon.returncode}:\n{log.read_text()[-4000:]}")
        try:
            data = notify.recv(4096)
        except TimeoutError:
            continue
        if "READY=1" in data.decode().splitlines():
            return
    raise RuntimeError(f"no READY=1 within {timeout_s:g} s:\n{log.read_text()[-4000:]}")


def vm_hwm(pid: int) -> int | None:
    """Peak RSS of `pid` in bytes (VmHWM), None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None
