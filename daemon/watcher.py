"""Finds the run directories and their source files, and decides when each is read.

Runs that are training get the fast path: a watchfiles (inotify) watcher over their
directories finds new files and checkpoint folders, and the files being followed wake the
event loop directly through `FileWakeups`. Everything else (finished runs, runs idle for
hours) costs no descriptor and no watch: a periodic rescan looks at them, rarely. A rescan
also catches what inotify cannot see (a run directory created later, a missed event, a network
filesystem). Reading and recording a file is `Ingest`'s job.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
import watchfiles

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import FINISHED_STATUSES
from tunewatch.daemon.ingest import ACTIVE_WINDOW_S, Ingest
from tunewatch.daemon.run_progress import FINISHED
from tunewatch.daemon.sources.discovery import (
    CHECKPOINT_DIR,
    TRAINER_STATE,
    SourceKind,
    SourceRules,
    checkpoint_step,
    scan_run,
)
from tunewatch.daemon.sources.inotify import FileWakeups
from tunewatch.daemon.sources.run_sources import RunSources
from tunewatch.daemon.sources.tailer import LogTailer
from tunewatch.daemon.store import AsyncStore, StoreFailure
from tunewatch.daemon.text import storable_text

log = structlog.get_logger(__name__)

# While a configured run directory does not exist yet, look for it this often (one stat call).
MISSING_RUN_POLL_S = 2.0
# Runs that are not active are scanned once every this many rescan intervals.
INACTIVE_SCAN_EVERY = 10
# Run directories scanned per trip to a worker thread.
SCAN_BATCH_RUNS = 256
# Changed paths whose meaning is remembered (cleared when full; rebuilt as changes come).
CLASSIFIED_PATHS = 4096
# Runs read at the same time while draining (their files interleave on the worker threads).
DRAIN_WORKERS = 8
# The directory watcher covers at most this many runs, the most recently written first.
MAX_WATCHED_RUNS = 64
_GLOB_CHARS = frozenset("*?[")


def run_name_for(path: Path) -> str:
    return storable_text(path.name or str(path))


def _scan_sorted(run_dir: Path, rules: SourceRules) -> list[tuple[SourceKind, Path]]:
    try:
        found = list(scan_run(run_dir, rules))
    except OSError:  # the directory went away or cannot be listed: nothing to read in it now
        return []
    # Older checkpoints first, so that the newest trainer_state is the last one read.
    found.sort(key=lambda kp: checkpoint_step(kp[1]) if kp[0] is SourceKind.TRAINER_STATE else 0)
    return found


def _scan_runs(dirs: Sequence[Path], rules: SourceRules) -> list[list[tuple[SourceKind, Path]]]:
    return [_scan_sorted(d, rules) for d in dirs]


def _checkpoint_order(raw: str) -> tuple[int, str]:
    path = Path(raw)
    for part in (path.name, path.parent.name):
        match = CHECKPOINT_DIR.match(part)
        if match:
            return int(match.group(1)), raw
    return 0, raw


class RunWatcher:
    """Follows every source file of every watched run directory."""

    def __init__(
        self,
        settings: Settings,
        store: AsyncStore,
        bus: EventBus,
        run_specs: Sequence[str],
        *,
        retry_store: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.run_specs = [os.path.abspath(os.path.expanduser(s)) for s in run_specs]
        self.rules = SourceRules.from_settings(settings)
        self.runs: dict[Path, RunSources] = {}
        # Run dir -> its files to read, in the order they were marked.
        self._dirty: dict[Path, dict[Path, SourceKind]] = {}
        self._wake = asyncio.Event()
        self._roots_changed = asyncio.Event()
        self._watched_roots: frozenset[Path] = frozenset()
        self.wakeups = FileWakeups(self.on_change, self._recheck_followed)
        # What each changed path means, remembered: a followed log changes many times a second.
        self._classified: dict[Path, tuple[RunSources | None, SourceKind | None, Path]] = {}
        self.ingest = Ingest(settings, store, bus, self.wakeups, self.mark, retry_store=retry_store)

    # -- run directories ----------------------------------------------------------------------

    def _existing_run_dirs(self) -> list[tuple[Path, float]]:
        """Each run directory that exists now, with its mtime (a run made a moment ago by a
        trainer that is starting is active before it logs anything)."""
        found: list[tuple[Path, float]] = []
        for spec in self.run_specs:
            paths = sorted(glob.glob(spec)) if _GLOB_CHARS & set(spec) else [spec]
            for path in paths:
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    found.append((Path(path), st.st_mtime))
        return found

    def missing_runs(self) -> list[str]:
        return [s for s in self.run_specs if not (_GLOB_CHARS & set(s)) and not Path(s).is_dir()]

    async def refresh_runs(self) -> bool:
        """Register run directories that appeared; True when there were any."""
        existing = await asyncio.to_thread(self._existing_run_dirs)
        made = {path: mtime for path, mtime in existing if path not in self.runs}
        new = list(made)
        if not new:
            return False
        wanted = [(storable_text(str(path)), run_name_for(path)) for path in new]
        registered = await self.store.call(self.store.store.ensure_runs, wanted)
        rows = {row.id: row for row in await self.store.call(self.store.store.runs)}
        for path, (run_id, name) in zip(new, registered, strict=True):
            row = rows[run_id]
            self.runs[path] = RunSources(
                run_id=run_id,
                name=name,
                path=path,
                finished=row.status in FINISHED_STATUSES,
                status_is_ours=row.status == FINISHED,
                total_steps=row.total_steps,
                last_change=made[path],
            )
        self._classified.clear()  # a path that belonged to no run may belong to a new one
        self._update_roots()  # a run made a moment ago is active: watch it now
        if len(new) <= 20:
            for path in new:
                log.info("watching run", run=self.runs[path].name, path=storable_text(str(path)))
        else:
            log.info("watching runs", new=len(new), total=len(self.runs))
        return True

    # -- marking and processing work ----------------------------------------------------------

    def mark(self, run: RunSources, kind: SourceKind, path: Path) -> None:
        self._dirty.setdefault(run.path, {})[path] = kind
        self._wake.set()

    def _run_for(self, path: Path) -> RunSources | None:
        for candidate in (path, *path.parents):
            run = self.runs.get(candidate)
            if run is not None:
                return run
        return None

    def on_change(self, path: Path) -> None:
        found = self._classified.get(path)
        if found is None:
            found = self._classify(path)
            if len(self._classified) >= CLASSIFIED_PATHS:
                self._classified.clear()
            self._classified[path] = found
        run, kind, target = found
        if run is not None and kind is not None:
            self.mark(run, kind, target)

    def _classify(self, path: Path) -> tuple[RunSources | None, SourceKind | None, Path]:
        """(run, kind, file to read) for a changed path; run or kind None to ignore it."""
        run = self._run_for(path)
        rel = None if run is None else run.relative(path)
        if run is None or rel is None:
            return None, None, path
        if len(rel.parts) == 1 and CHECKPOINT_DIR.match(rel.name):
            # A new checkpoint folder: its trainer_state.json may be written before inotify
            # watches the folder, so look for it now rather than at the next rescan.
            return run, SourceKind.TRAINER_STATE, path / TRAINER_STATE
        return run, self.rules.classify(rel), path

    async def rescan(self, *, everything: bool = False) -> None:
        """Look for new and changed files: in active runs always, in the others when due."""
        await self.refresh_runs()
        now, wall = time.monotonic(), time.time()
        slow_s = self.settings.daemon.rescan_interval_s * INACTIVE_SCAN_EVERY
        due = [
            run
            for run in self.runs.values()
            if everything or run.active(wall, ACTIVE_WINDOW_S) or now - run.last_scan >= slow_s
        ]
        for start in range(0, len(due), SCAN_BATCH_RUNS):
            batch = due[start : start + SCAN_BATCH_RUNS]
            found = await asyncio.to_thread(_scan_runs, [r.path for r in batch], self.rules)
            for run, files in zip(batch, found, strict=True):
                run.last_scan = now
                for kind, path in files:
                    self.mark(run, kind, path)

    async def drain(self) -> None:
        """Read marked files until nothing is left.

        Open logs (the runs logging now) are read together, in one trip to a worker thread;
        the other files by several workers, a run each, each run's files in order (a run's
        trainer_state.json files feed one document). Files marked meanwhile wait for the
        next round.
        """
        while self._dirty:
            hot = self._take_hot()
            cold, self._dirty = self._dirty, {}
            if hot:
                try:
                    await self.ingest.process_hot(hot)
                except StoreFailure as exc:
                    await self.ingest.wait_for_store(str(exc))
            workers = min(DRAIN_WORKERS, len(cold))
            await asyncio.gather(*(self._drain_worker(cold) for _ in range(workers)))
        self._wake.clear()

    def _take_hot(self) -> list[tuple[RunSources, SourceKind, Path]]:
        hot = []
        for run_path in list(self._dirty):
            run = self.runs.get(run_path)
            if run is None:
                continue
            files = self._dirty[run_path]
            for path, kind in list(files.items()):
                if self.ingest.is_hot(run, kind, path):
                    hot.append((run, kind, path))
                    del files[path]
            if not files:
                del self._dirty[run_path]
        return hot

    async def _drain_worker(self, queue: dict[Path, dict[Path, SourceKind]]) -> None:
        while queue:
            run_path = next(iter(queue))
            await self._read_files(run_path, queue.pop(run_path))

    async def _read_files(self, run_path: Path, files: dict[Path, SourceKind]) -> None:
        run = self.runs.get(run_path)
        if run is None:
            return
        pending = list(files.items())
        for i, (path, kind) in enumerate(pending):
            try:
                await self.ingest.process(run, kind, path)
            except StoreFailure as exc:
                # Nothing of it was recorded: read it (and the rest) again once the store
                # takes writes, before anything marked meanwhile.
                later = self._dirty.pop(run_path, {})
                self._dirty[run_path] = dict(pending[i:]) | later
                await self.ingest.wait_for_store(str(exc))
                return

    def _recheck_followed(self) -> None:
        """inotify dropped events (queue overflow): read every followed log again."""
        for run in self.runs.values():
            for follower in run.followers.values():
                if isinstance(follower, LogTailer):
                    self.on_change(follower.path)

    async def catch_up(self) -> None:
        """Read everything written while tunewatch was not watching."""
        states = await self.store.call(self.store.store.file_states)
        self.ingest.known_states = {state.key: state for state in states}
        try:
            await self.rescan(everything=True)
            await self.drain()
        finally:
            self.ingest.known_states = None
        await self.ingest.retire_idle(list(self.runs.values()))
        self.ingest.live = True

    async def close_files(self) -> None:
        """Close every followed file (reading resumes from the store's positions)."""
        await self.ingest.close_all(list(self.runs.values()))

    # -- the long-running loops -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.wakeups.open()
        for run in self.runs.values():
            for follower in run.followers.values():
                if isinstance(follower, LogTailer) and follower.is_open:
                    self.wakeups.watch(follower.path)
        tasks = [
            asyncio.create_task(self._watch_loop(stop), name="watch"),
            asyncio.create_task(self._rescan_loop(stop), name="rescan"),
            asyncio.create_task(self._process_loop(stop), name="ingest"),
        ]
        try:
            await stop.wait()
        finally:
            self.wakeups.close()
            self._roots_changed.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.close_files()

    async def _process_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            await self.drain()
            if self.ingest.became_active.is_set():
                self.ingest.became_active.clear()
                self._update_roots()

    async def _rescan_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.daemon.rescan_interval_s
        # Lines appended between the catch-up and the moment inotify watches were in place
        # produced no event: look once more right after the watcher started.
        await asyncio.sleep(0.5)
        await self.rescan(everything=True)
        elapsed = 0.0
        while not stop.is_set():
            wait = MISSING_RUN_POLL_S if self.missing_runs() else interval
            await asyncio.sleep(min(wait, interval))
            elapsed += min(wait, interval)
            if elapsed >= interval:
                elapsed = 0.0
                await self.rescan()
                await self.ingest.retire_idle(list(self.runs.values()))
            elif await self.refresh_runs():
                await self.rescan()
            self._update_roots()

    def _active_roots(self) -> frozenset[Path]:
        now = time.time()
        active = [r for r in self.runs.values() if r.active(now, ACTIVE_WINDOW_S)]
        active.sort(key=lambda r: r.last_change, reverse=True)
        return frozenset(r.path for r in active[:MAX_WATCHED_RUNS])

    def _update_roots(self) -> None:
        """Restart the directory watcher when the set of active runs changed."""
        if self._active_roots() != self._watched_roots:
            self._roots_changed.set()

    async def _watch_loop(self, stop: asyncio.Event) -> None:
        step_ms = self.settings.daemon.watch_step_ms
        while not stop.is_set():
            self._watched_roots = self._active_roots()
            roots = [str(p) for p in self._watched_roots]
            self._roots_changed.clear()
            if not roots:
                await self._roots_changed.wait()
                continue
            try:
                async for changes in watchfiles.awatch(
                    *roots,
                    watch_filter=self._filter,
                    step=step_ms,
                    debounce=max(step_ms * 4, 20),
                    stop_event=self._roots_changed,
                    recursive=True,
                    ignore_permission_denied=True,
                ):
                    # Checkpoints in the order they were saved, so each one is announced.
                    for raw in sorted(self._news(changes), key=_checkpoint_order):
                        self.on_change(Path(raw))
            except FileNotFoundError:
                # A watched run directory was removed; rescan rebuilds the set of roots.
                await asyncio.sleep(MISSING_RUN_POLL_S)
                self.runs = {p: r for p, r in self.runs.items() if p.is_dir()}
                self._classified.clear()

    def _news(self, changes: set[tuple[watchfiles.Change, str]]) -> set[str]:
        """The changed paths the file wake-ups have not already reported: appends to a
        followed log reach both watchers, and reading the file twice is wasted work."""
        return {
            raw
            for change, raw in changes
            if change != watchfiles.Change.modified or not self.wakeups.is_watching(Path(raw))
        }

    def _filter(self, _change: watchfiles.Change, path: str) -> bool:
        name = os.path.basename(path)
        return bool(CHECKPOINT_DIR.match(name)) or self.rules.may_matter(name)
