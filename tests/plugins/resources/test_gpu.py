"""GPU memory: no NVML means no alert and no error; the threshold on injected readings."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from tunewatch.plugins.resources.gpu import GpuMemory, GpuReader, _nvml, judge_gpu

GiB = 2**30


def nvml_works() -> bool:
    try:
        _nvml().nvmlInit()
    except Exception:
        return False
    _nvml().nvmlShutdown()
    return True


@pytest.mark.skipif(nvml_works(), reason="this machine has a GPU and its driver")
def test_without_nvml_there_are_no_readings_and_it_is_said_once() -> None:
    import structlog

    with capture_logs() as logs:
        reader = GpuReader(structlog.get_logger("test"))
        assert reader.read() == [] and reader.read() == []
        reader.close()
    (said,) = logs
    assert said["log_level"] == "info" and "NVML is not available" in said["event"]


@pytest.mark.skipif(not nvml_works(), reason="no GPU or driver here")
def test_with_a_gpu_each_one_reads_its_memory() -> None:
    import structlog

    reader = GpuReader(structlog.get_logger("test"))
    readings = reader.read()
    reader.close()
    assert readings and all(0 <= r.used_bytes <= r.total_bytes for r in readings)


def test_a_gpu_near_full_is_a_normal_alert_and_below_the_threshold_nothing() -> None:
    assert judge_gpu(GpuMemory(0, int(70 * GiB), 80 * GiB), 0.97) is None
    assert judge_gpu(GpuMemory(0, 0, 0), 0.97) is None
    finding = judge_gpu(GpuMemory(1, int(79 * GiB), 80 * GiB), 0.97)
    assert finding is not None
    assert (finding.resource, finding.severity, finding.path) == ("gpu_memory", "normal", "gpu1")
    assert finding.summary == "gpu1 memory 99% used (1.0 GiB free)"
