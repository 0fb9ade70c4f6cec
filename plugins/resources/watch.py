"""One sampling round: the `ResourceSample`s to publish and the findings of every watch.

Synchronous (the plugin runs it in a thread) and cheap: one `disk_usage` per volume, one
`virtual_memory`, one RSS per running trainer, one `stat` per training run's folder (its
checkpoints are listed and sized again only when they changed), one NVML call per GPU.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from tunewatch.daemon.events import ResourceSample
from tunewatch.daemon.store import RunRow
from tunewatch.plugins.resources.checkpoints import CheckpointIndex, cadence
from tunewatch.plugins.resources.config import ResourcesConfig
from tunewatch.plugins.resources.disk_forecast import (
    DiskState,
    RunSaves,
    judge_disk,
    remaining_saves,
)
from tunewatch.plugins.resources.findings import Finding
from tunewatch.plugins.resources.forecast import Series
from tunewatch.plugins.resources.gpu import GpuReader, judge_gpu
from tunewatch.plugins.resources.memory_watch import (
    HostMemory,
    TrainerMemory,
    judge_host_memory,
    judge_trainer_memory,
)
from tunewatch.plugins.resources.reclaim import RunBest, reclaim_advice, reclaimable
from tunewatch.plugins.resources.sampling import (
    Volume,
    is_training,
    mount_point,
    trainer_pid,
    trainer_rss,
    volumes_of,
)

DiskUsage = Callable[[Path], tuple[int, int, int]]  # (total, used, free), as shutil's


def read_host_memory() -> HostMemory:
    vm = psutil.virtual_memory()
    return HostMemory(int(vm.total), int(vm.total - vm.available))


@dataclass(frozen=True, slots=True)
class Round:
    time: float
    samples: list[ResourceSample]
    findings: list[Finding]


class ResourceWatch:
    """Samples every volume holding runs, the host, each running trainer and each GPU, keeps
    the recent series the forecasts need, and reports what is running out."""

    def __init__(
        self,
        config: ResourcesConfig,
        *,
        gpu: GpuReader | None = None,
        disk_usage: DiskUsage = shutil.disk_usage,
        host_memory: Callable[[], HostMemory] = read_host_memory,
        rss: Callable[[int], int | None] = trainer_rss,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.gpu = gpu
        self._disk_usage = disk_usage
        self._host_memory = host_memory
        self._rss = rss
        self._clock = clock
        self.checkpoints = CheckpointIndex(clock)
        self._free: dict[int, Series] = {}  # per volume (st_dev)
        self._rss_series: dict[tuple[str, int], Series] = {}
        self._mounts: dict[int, str] = {}
        # Per volume name: the training runs on it, for the advice of an alert that opens.
        self._training: dict[str, list[tuple[str, Path]]] = {}

    def observe(self, runs: Sequence[RunRow]) -> Round:
        now = self._clock()
        host = self._host_memory()
        samples: list[ResourceSample] = []
        findings: list[Finding] = []
        volumes = volumes_of(runs)
        for volume in volumes:
            findings.extend(self._observe_volume(volume, host, now, samples))
        finding = judge_host_memory(host, self.config.memory_warn_fraction)
        if finding is not None:
            findings.append(finding)
        for reading in self.gpu.read() if self.gpu is not None else []:
            finding = judge_gpu(reading, self.config.gpu_warn_fraction)
            if finding is not None:
                findings.append(finding)
        self._forget_all_but(volumes, samples)
        return Round(now, samples, findings)

    def training_runs(self, volume: str) -> list[str]:
        """The names of the runs training on `volume` at the last round."""
        return [name for name, _ in self._training.get(volume, [])]

    def reclaim_advice(self, volume: str, bests: Mapping[str, RunBest]) -> str:
        """What can go on `volume`: the training runs' checkpoints that are neither newest nor
        best (`bests`, from the history), what deleting them frees, and the command."""
        runs = [
            (name, self.checkpoints.checkpoints(run_dir), bests.get(name, RunBest()))
            for name, run_dir in self._training.get(volume, [])
        ]
        return reclaim_advice(volume, reclaimable(runs, self.checkpoints.size))

    def _observe_volume(
        self, volume: Volume, host: HostMemory, now: float, samples: list[ResourceSample]
    ) -> list[Finding]:
        total, used, free = self._disk_usage(volume.path)
        name = self._mount(volume)
        series = self._free.setdefault(volume.device, Series(self.config.forecast_window_s))
        series.add(now, float(free))
        slope = series.slope_per_s()
        findings: list[Finding] = []
        training: list[tuple[str, Path]] = []
        saves: list[RunSaves] = []
        sampled_trainer = False
        for run in volume.runs:
            if not is_training(run):
                continue
            training.append((run.name, Path(run.path)))
            planned = self._saves(run, now)
            if planned is not None:
                saves.append(planned)
            pid = trainer_pid(run)
            if pid is None:
                continue
            rss = self._rss(pid)
            samples.append(_sample(Path(run.path), total, used, free, host, now, pid, rss))
            sampled_trainer = True
            finding = self._judge_trainer(run.name, pid, rss, host, now)
            if finding is not None:
                findings.append(finding)
        if not sampled_trainer:
            samples.append(_sample(volume.path, total, used, free, host, now, None, None))
        self._training[name] = training
        disk = DiskState(
            name, total, free, -slope if slope is not None else None, self.config.forecast_window_s
        )
        finding = judge_disk(disk, saves, self.config.disk_warn_hours * 3600, now)
        if finding is not None:
            findings.append(finding)
        return findings

    def _saves(self, run: RunRow, now: float) -> RunSaves | None:
        """What `run` will still save, or None if it has no checkpoint or stopped saving."""
        run_dir = Path(run.path)
        checkpoints = self.checkpoints.checkpoints(run_dir)
        if not checkpoints:
            return None
        newest = checkpoints[-1]
        every = cadence(checkpoints)
        quiet_for = now - newest.mtime
        # A run that saved nothing for this long has stopped (crashed, or finished without
        # saying so): its next checkpoint is not coming.
        if quiet_for > max(3 * (every.seconds or 0.0), self.config.disk_warn_hours * 3600):
            return None
        # The newest checkpoint may still be being written: the larger of the newest two is
        # the size of a whole one.
        size = max(self.checkpoints.size(c).bytes for c in checkpoints[-2:])
        return RunSaves(
            run=run.name,
            newest=newest,
            size_bytes=size,
            cadence=every,
            remaining=remaining_saves(newest.step, every.steps, run.total_steps),
            rotating=self.checkpoints.rotating(run_dir),
        )

    def _judge_trainer(
        self, run: str, pid: int, rss: int | None, host: HostMemory, now: float
    ) -> Finding | None:
        if rss is None:
            return None
        series = self._rss_series.setdefault((run, pid), Series(self.config.forecast_window_s))
        series.add(now, float(rss))
        trainer = TrainerMemory(run, pid, rss, series.slope_per_s())
        return judge_trainer_memory(
            trainer, host, self.config.memory_warn_fraction, self.config.memory_warn_hours * 3600
        )

    def _mount(self, volume: Volume) -> str:
        name = self._mounts.get(volume.device)
        if name is None:
            name = self._mounts[volume.device] = str(mount_point(volume.path))
        return name

    def _forget_all_but(self, volumes: Sequence[Volume], samples: Sequence[ResourceSample]) -> None:
        """Drop the series and caches of volumes, trainers and runs that are gone."""
        devices = {v.device for v in volumes}
        self._free = {d: s for d, s in self._free.items() if d in devices}
        self._mounts = {d: m for d, m in self._mounts.items() if d in devices}
        pids = {s.trainer_pid for s in samples if s.trainer_pid is not None}
        self._rss_series = {k: s for k, s in self._rss_series.items() if k[1] in pids}
        names = {self._mounts[d] for d in devices}
        self._training = {v: r for v, r in self._training.items() if v in names}
        self.checkpoints.keep_only(d for runs in self._training.values() for _, d in runs)


def _sample(
    path: Path,
    total: int,
    used: int,
    free: int,
    host: HostMemory,
    now: float,
    pid: int | None,
    rss: int | None,
) -> ResourceSample:
    return ResourceSample(
        disk_path=str(path),
        disk_used_fraction=used / total if total else 0.0,
        disk_free_bytes=free,
        memory_used_fraction=host.used_fraction,
        load_1m=os.getloadavg()[0],
        trainer_pid=pid,
        trainer_rss_bytes=rss,
        time=now,
    )
