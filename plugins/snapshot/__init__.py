"""The snapshot plugin: on each new best model, keep a safe copy of that step's checkpoint.

Copies land in `[paths] snapshots` with a manifest of sha256 sums; the `keep_best` best are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import structlog

from tunewatch.daemon.config import PositiveFloat
from tunewatch.daemon.events import BestModelFound, CheckpointSaved, SnapshotCreated
from tunewatch.daemon.plugin import PluginContext
from tunewatch.plugins.snapshot.copy import Aborted
from tunewatch.plugins.snapshot.locate import Located, Pending, Unavailable, locate
from tunewatch.plugins.snapshot.retention import list_snapshots, prune
from tunewatch.plugins.snapshot.settle import NotSettled, wait_until_settled
from tunewatch.plugins.snapshot.staging import UnsafeRemoval, clean_stale
from tunewatch.plugins.snapshot.take import (
    Refused,
    SnapshotRequest,
    SourceChanged,
    Taken,
    take_snapshot,
)

# CheckpointSaved only comes when the trainer_state source is on; look at the run dir this
# often as well, which costs one directory listing.
CHECKPOINT_POLL_S = 5.0
# Runs whose best model is being snapshotted, or its checkpoint waited for, at once; the bests of
# other runs wait their turn in one queue. A box trains a handful of runs at a time, while a
# start-up can read ten thousand finished ones: that must not make ten thousand waiters.
CONCURRENT_RUNS = 8
# How long the checkpoint of a best from history may take to settle: it is complete already, or
# a trainer still running is finishing it now.
HISTORY_SETTLE_S = 30.0


@dataclass(frozen=True, slots=True)
class SnapshotConfig:
    enabled: bool = True
    # 0 would give up on every checkpoint: settling alone takes `settle_s`.
    wait_for_checkpoint_s: PositiveFloat = 600.0
    # 0 would copy a checkpoint at first sight, possibly half-written.
    settle_s: PositiveFloat = 2.0
    keep_best: int = 3  # 0: keep all
    model_dir: str = ""
    hardlink: bool = True


class SnapshotPlugin:
    """Snapshots the checkpoint of every `BestModelFound`, one at a time per run, a few runs at
    a time."""

    name: ClassVar[str] = "snapshot"
    Config: ClassVar[type[SnapshotConfig]] = SnapshotConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: SnapshotConfig = ctx.config
        self.log: Any = ctx.log if ctx.log is not None else structlog.get_logger(__name__)
        # Bests waiting for a worker: live ones first, then by arrival. A run training now may
        # delete its checkpoint (save_total_limit) before a backlog of history is done.
        self._backlog: asyncio.PriorityQueue[tuple[bool, int, BestModelFound]] = (
            asyncio.PriorityQueue()
        )
        self._arrivals = 0
        # Runs being handled -> their bests that came meanwhile, handled next by the same worker.
        self._active: dict[str, deque[BestModelFound]] = {}
        self._workers: list[asyncio.Task[None]] = []
        # Runs whose checkpoint is being waited for -> set when a checkpoint is saved.
        self._saved: dict[str, asyncio.Event] = {}
        self._dir_locks: dict[str, asyncio.Lock] = {}
        self._cleaned: set[str] = set()
        self._unsubscribe: list[Callable[[], None]] = []
        self._stopping = threading.Event()
        self._startup: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.config.enabled:
            return
        bus = self.ctx.bus
        self._unsubscribe = [
            bus.subscribe(BestModelFound, self._on_best, name="snapshot:best"),
            bus.subscribe(CheckpointSaved, self._on_checkpoint, name="snapshot:checkpoint"),
        ]
        self._startup = self.ctx.spawn(self._clean_known_dirs(), name="cleanup")
        self._workers = [
            self.ctx.spawn(self._work(), name=f"worker-{n}") for n in range(CONCURRENT_RUNS)
        ]

    async def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        # A copy running in a thread cannot be cancelled; this makes it stop and clean up.
        self._stopping.set()
        tasks = [*self._workers, *([self._startup] if self._startup else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- bus handlers ---------------------------------------------------------------------------

    def _on_best(self, event: BestModelFound) -> None:
        self._arrivals += 1
        self._backlog.put_nowait((event.historical, self._arrivals, event))

    def _on_checkpoint(self, event: CheckpointSaved) -> None:
        saved = self._saved.get(event.run)
        if saved is not None:
            saved.set()

    # -- one snapshot at a time per run, a few runs at a time -------------------------------------

    async def _work(self) -> None:
        while True:
            _historical, _arrival, event = await self._backlog.get()
            later = self._active.get(event.run)
            if later is not None:
                later.append(event)  # its run is being handled: by the same worker, in order
                continue
            self._active[event.run] = later = deque([event])
            try:
                while later:
                    await self._handle_logged(later.popleft())
            except Aborted:
                return
            finally:
                del self._active[event.run]

    async def _handle_logged(self, event: BestModelFound) -> None:
        try:
            await self._handle(event)
        except Aborted:
            raise
        except Exception:
            self.log.exception("snapshot failed", run=event.run, step=event.step)

    async def _handle(self, event: BestModelFound) -> None:
        run_dir = await self._run_dir(event.run)
        if run_dir is None:
            self._skip(event, f"run {event.run!r} has no known directory")
            return
        if not math.isfinite(event.value):
            self._skip(event, f"the best value {event.value} is not finite")
            return
        snapshots_dir = self.ctx.run_path(run_dir, self.ctx.settings.paths.snapshots)
        found = await self._find_checkpoint(event, run_dir, snapshots_dir)
        if isinstance(found, Snapshotted):
            self.log.info(
                "step already snapshotted", run=event.run, step=event.step, path=str(found.path)
            )
        elif isinstance(found, str):
            self._skip(event, found)
        else:
            await self._snapshot(event, found, snapshots_dir)

    async def _run_dir(self, run: str) -> Path | None:
        known = self.ctx.run_dirs.get(run)
        if known is not None:
            return Path(known)
        # A run found after the plugin started is only in the store.
        rows = await self.ctx.store.call(self.ctx.store.store.runs)
        return next((Path(row.path) for row in rows if row.name == run), None)

    async def _find_checkpoint(
        self, event: BestModelFound, run_dir: Path, snapshots_dir: Path
    ) -> Snapshotted | Located | str:
        """The step's snapshot if it has one, else its checkpoint once it exists, or why there
        will be none."""
        # Listened for before the first look, so that a checkpoint saved during it is not missed.
        saved = self._saved[event.run] = asyncio.Event()
        try:
            first = await asyncio.to_thread(_look, event, run_dir, snapshots_dir, self.config)
            if isinstance(first, Snapshotted):
                return first
            return await self._wait_for_checkpoint(event, run_dir, first, saved)
        finally:
            del self._saved[event.run]

    async def _wait_for_checkpoint(
        self,
        event: BestModelFound,
        run_dir: Path,
        found: Located | Pending | Unavailable,
        saved: asyncio.Event,
    ) -> Located | str:
        """The step's checkpoint once it exists, or why there will be none; `found` is the
        first look, `saved` is set when the run saves a checkpoint."""
        # A trainer may log the evaluation that makes a new best before it saves that step.
        loop = asyncio.get_running_loop()
        wait_s = self.config.wait_for_checkpoint_s
        deadline = loop.time() + wait_s
        while True:
            if isinstance(found, Located):
                return found
            if isinstance(found, Unavailable):
                return found.reason
            if event.historical:
                # Read at start-up: the trainer has moved on, so this step's checkpoint, missing
                # now, will never come.
                return f"{found.reason}; a best from history, not waited for"
            remaining = deadline - loop.time()
            if remaining <= 0:
                return f"{found.reason}; gave up after waiting {wait_s:g} s"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(saved.wait(), min(remaining, CHECKPOINT_POLL_S))
            saved.clear()  # before looking, so a save during the look is not missed
            found = await asyncio.to_thread(
                locate, run_dir, event.step, event.checkpoint, self.config.model_dir
            )

    async def _snapshot(self, event: BestModelFound, found: Located, snapshots_dir: Path) -> None:
        loop = asyncio.get_running_loop()
        wait_s = self.config.wait_for_checkpoint_s
        if event.historical:
            wait_s = min(wait_s, self.config.settle_s + HISTORY_SETTLE_S)
        deadline = loop.time() + wait_s
        while True:
            try:
                settled = await wait_until_settled(
                    found.path,
                    settle_s=self.config.settle_s,
                    timeout_s=max(0.0, deadline - loop.time()),
                    required=found.required_file,
                )
            except NotSettled as exc:
                self._skip(event, str(exc))
                return
            request = SnapshotRequest(
                run=event.run,
                step=event.step,
                metric=event.metric,
                value=event.value,
                source=found.path,
                snapshots_dir=snapshots_dir,
                # model_dir is overwritten with each save, possibly in place: only a copy is safe.
                hardlink=self.config.hardlink and found.kind != "model_dir",
                settled=settled,
            )
            async with self._dir_lock(snapshots_dir):
                await self._clean_once(snapshots_dir)
                try:
                    taken = await asyncio.to_thread(take_snapshot, request, self._stopping.is_set)
                except SourceChanged as exc:
                    self.log.info("checkpoint changed while copying; waiting again", why=str(exc))
                    continue
                except Refused as exc:
                    self._skip(event, str(exc))
                    return
                pruned = await self._prune(event, snapshots_dir)
            self._report(event, found, taken, pruned)
            return

    async def _prune(self, event: BestModelFound, snapshots_dir: Path) -> list[Path]:
        try:
            return await asyncio.to_thread(
                prune, snapshots_dir, event.run, event.metric, self.config.keep_best
            )
        except (UnsafeRemoval, OSError) as exc:
            self.log.warning("retention skipped", run=event.run, error=str(exc))
            return []

    def _report(
        self, event: BestModelFound, found: Located, taken: Taken, pruned: list[Path]
    ) -> None:
        for path in pruned:
            self.log.info("snapshot removed by retention", run=event.run, path=str(path))
        if taken.path in pruned:
            self.log.info(
                "new snapshot is not among the best kept; removed again",
                run=event.run,
                step=event.step,
                keep_best=self.config.keep_best,
            )
            return
        self.log.info(
            "snapshot created",
            run=event.run,
            step=event.step,
            path=str(taken.path),
            source=str(found.path),
            linked=taken.copy.linked,
            copied=taken.copy.copied,
            skipped=taken.copy.skipped,
        )
        self.ctx.bus.publish(
            SnapshotCreated(event.run, event.step, str(taken.path), str(found.path))
        )

    def _skip(self, event: BestModelFound, reason: str) -> None:
        # Most finished runs read at start-up no longer have their best step's checkpoint
        # (save_total_limit): thousands of warnings would say nothing a person must act on.
        log = self.log.debug if event.historical else self.log.warning
        log("no snapshot of this best model", run=event.run, step=event.step, reason=reason)

    # -- leftovers of a crash ---------------------------------------------------------------------

    def _dir_lock(self, snapshots_dir: Path) -> asyncio.Lock:
        # One lock per snapshots folder: an absolute one is shared by all runs, and cleanup must
        # never run while another run's snapshot is being built there.
        return self._dir_locks.setdefault(_dir_key(snapshots_dir), asyncio.Lock())

    async def _clean_once(self, snapshots_dir: Path) -> None:
        """Remove what a crash left in `snapshots_dir`, once per start; hold its lock."""
        key = _dir_key(snapshots_dir)
        if key in self._cleaned:
            return
        self._cleaned.add(key)
        for path in await asyncio.to_thread(clean_stale, snapshots_dir):
            self.log.info("removed an unfinished snapshot left by a crash", path=str(path))

    async def _clean_known_dirs(self) -> None:
        dirs = {name: Path(path) for name, path in self.ctx.run_dirs.items()}
        try:
            for row in await self.ctx.store.call(self.ctx.store.store.runs):
                dirs.setdefault(row.name, Path(row.path))
        except Exception:
            self.log.exception("could not list the runs; cleaning up only the configured ones")
        configured = self.ctx.settings.paths.snapshots
        wanted = {self.ctx.run_path(run_dir, configured) for run_dir in dirs.values()}
        # Of ten thousand runs most have no snapshots folder: one trip to a thread finds those
        # that do, rather than one trip (and one lock kept) per run.
        for snapshots_dir in await asyncio.to_thread(_folders, wanted):
            try:
                async with self._dir_lock(snapshots_dir):
                    await self._clean_once(snapshots_dir)
            except OSError as exc:
                self.log.warning("could not clean up", path=str(snapshots_dir), error=str(exc))


def _folders(paths: Iterable[Path]) -> list[Path]:
    return [path for path in paths if path.is_dir()]


def _dir_key(snapshots_dir: Path) -> str:
    return os.path.abspath(snapshots_dir)


@dataclass(frozen=True, slots=True)
class Snapshotted:
    """The step has a snapshot already (a best announced again, e.g. after a restart)."""

    path: Path


def _look(
    event: BestModelFound, run_dir: Path, snapshots_dir: Path, config: SnapshotConfig
) -> Snapshotted | Located | Pending | Unavailable:
    """The step's snapshot if it has one, else where its checkpoint is: in one trip to a thread,
    as ten thousand bests can come at start-up."""
    for path, manifest in list_snapshots(snapshots_dir):
        if manifest.run == event.run and manifest.step == event.step:
            return Snapshotted(path)
    return locate(run_dir, event.step, event.checkpoint, config.model_dir)
