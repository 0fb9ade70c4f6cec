"""Turns file changes in the watched run directories into recorded, published events.

One watchfiles (inotify) watcher covers every run directory; a periodic rescan catches what
inotify cannot (a run directory created later, a missed event, a network filesystem). Each
batch read from a file is committed to the store together with the file's new position, and
published on the bus only after that commit: a restart resumes exactly after the last batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import structlog
import watchfiles

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import SourceError
from tunewatch.daemon.sources.discovery import (
    CHECKPOINT_DIR,
    TRAINER_STATE,
    SourceKind,
    SourceRules,
    checkpoint_step,
    scan_run,
)
from tunewatch.daemon.sources.document import DocumentFollower
from tunewatch.daemon.sources.inotify import FileWakeups
from tunewatch.daemon.sources.run_sources import RunSources, make_follower
from tunewatch.daemon.sources.tailer import TailBatch
from tunewatch.daemon.store import AsyncStore

log = structlog.get_logger(__name__)

# While a configured run directory does not exist yet, look for it this often (one stat call).
MISSING_RUN_POLL_S = 2.0
# Source errors logged per file before the rest are only counted (`tunewatch status` shows all).
LOGGED_ERRORS_PER_FILE = 10
# A document caught mid-write is read again after this delay even if no new change arrives.
DOCUMENT_RETRY_S = 0.25
_GLOB_CHARS = frozenset("*?[")


def run_name_for(path: Path) -> str:
    return path.name or str(path)


def _scan_sorted(run_dir: Path, rules: SourceRules) -> list[tuple[SourceKind, Path]]:
    found = list(scan_run(run_dir, rules))
    # Older checkpoints first, so that the newest trainer_state is the last one read.
    found.sort(key=lambda kp: checkpoint_step(kp[1]) if kp[0] is SourceKind.TRAINER_STATE else 0)
    return found


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
        self, settings: Settings, store: AsyncStore, bus: EventBus, run_specs: Sequence[str]
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.run_specs = [os.path.abspath(os.path.expanduser(s)) for s in run_specs]
        self.rules = SourceRules.from_settings(settings)
        self.runs: dict[Path, RunSources] = {}
        self._dirty: dict[tuple[Path, Path], SourceKind] = {}
        self._wake = asyncio.Event()
        self._roots_changed = asyncio.Event()
        self.batches_committed = 0
        self._errors_logged: Counter[tuple[str, str]] = Counter()
        self.wakeups = FileWakeups(self.on_change, self._recheck_followed)

    # -- run directories ----------------------------------------------------------------------

    def _existing_run_dirs(self) -> list[Path]:
        found: list[Path] = []
        for spec in self.run_specs:
            if _GLOB_CHARS & set(spec):
                found.extend(Path(p) for p in sorted(glob.glob(spec)) if Path(p).is_dir())
            elif Path(spec).is_dir():
                found.append(Path(spec))
        return found

    def missing_runs(self) -> list[str]:
        return [s for s in self.run_specs if not (_GLOB_CHARS & set(s)) and not Path(s).is_dir()]

    async def refresh_runs(self) -> bool:
        """Register run directories that appeared; True when the set of watched roots changed."""
        changed = False
        for path in self._existing_run_dirs():
            if path in self.runs:
                continue
            run_id = await self.store.call(
                self.store.store.ensure_run, str(path), run_name_for(path)
            )
            names = await self.store.call(self.store.store.run_names)
            self.runs[path] = RunSources(run_id=run_id, name=names[run_id], path=path)
            log.info("watching run", run=names[run_id], path=str(path))
            changed = True
        return changed

    # -- marking and processing work ----------------------------------------------------------

    def mark(self, run: RunSources, kind: SourceKind, path: Path) -> None:
        self._dirty[(run.path, path)] = kind
        self._wake.set()

    def _run_for(self, path: Path) -> RunSources | None:
        for run in self.runs.values():
            if path == run.path or run.path in path.parents:
                return run
        return None

    def on_change(self, path: Path) -> None:
        run = self._run_for(path)
        if run is None:
            return
        rel = run.relative(path)
        if rel is None:
            return
        if len(rel.parts) == 1 and CHECKPOINT_DIR.match(rel.name):
            # A new checkpoint folder: its trainer_state.json may be written before inotify
            # watches the folder, so look for it now rather than at the next rescan.
            self.mark(run, SourceKind.TRAINER_STATE, path / TRAINER_STATE)
            return
        kind = self.rules.classify(rel)
        if kind is not None:
            self.mark(run, kind, path)

    async def rescan(self) -> None:
        if await self.refresh_runs():
            self._roots_changed.set()
        for run in self.runs.values():
            found = await asyncio.to_thread(_scan_sorted, run.path, self.rules)
            for kind, path in found:
                self.mark(run, kind, path)

    async def drain(self) -> None:
        """Process marked files until nothing is left to read."""
        while self._dirty:
            (run_path, path), kind = next(iter(self._dirty.items()))
            del self._dirty[(run_path, path)]
            run = self.runs.get(run_path)
            if run is not None:
                await self._process(run, kind, path)
        self._wake.clear()

    async def _process(self, run: RunSources, kind: SourceKind, path: Path) -> None:
        key = run.follower_key(kind, path)
        follower = run.followers.get(key)
        if follower is None:
            state = await self.store.call(self.store.store.file_state, key)
            follower = make_follower(run, kind, path, state, self.settings)
            run.followers[key] = follower
        if isinstance(follower, DocumentFollower):
            batch = await follower.read(path)
            if batch is not None:
                await self._commit(run, batch)
            if follower.wants_retry():
                asyncio.get_running_loop().call_later(DOCUMENT_RETRY_S, self.mark, run, kind, path)
            return
        # Parse the next batch while the store thread commits the previous one (SQLite releases
        # the GIL while it writes); events are still published only after their commit.
        in_flight: tuple[asyncio.Task[None], TailBatch] | None = None
        while (batch := await follower.read()) is not None:
            if in_flight is not None:
                await self._publish_when_committed(*in_flight)
            in_flight = (asyncio.ensure_future(self._store_batch(run, batch)), batch)
        if in_flight is not None:
            await self._publish_when_committed(*in_flight)
        self.wakeups.watch(path)

    async def _store_batch(self, run: RunSources, batch: TailBatch) -> None:
        await self.store.call(self.store.store.commit_batch, run.run_id, batch.events, batch.state)

    async def _publish_when_committed(self, commit: asyncio.Task[None], batch: TailBatch) -> None:
        await commit
        self._publish(batch)

    async def _commit(self, run: RunSources, batch: TailBatch) -> None:
        await self._store_batch(run, batch)
        self._publish(batch)

    def _publish(self, batch: TailBatch) -> None:
        self.batches_committed += 1
        if batch.state.errors:
            self._log_errors(batch)
        self.bus.publish_many(batch.events)

    def _log_errors(self, batch: TailBatch) -> None:
        for event in batch.events:
            if not isinstance(event, SourceError):
                continue
            key = (event.run, event.source)
            self._errors_logged[key] += 1
            count = self._errors_logged[key]
            if count <= LOGGED_ERRORS_PER_FILE:
                log.warning(
                    "skipped bad input",
                    run=event.run,
                    source=event.source,
                    kind=event.kind,
                    location=event.location,
                    message=event.message,
                )
            if count == LOGGED_ERRORS_PER_FILE:
                log.warning(
                    "further errors in this file are counted, not logged; see `tunewatch status`",
                    run=event.run,
                    source=event.source,
                )

    def _recheck_followed(self) -> None:
        """inotify dropped events (queue overflow): read every followed log again."""
        for run in self.runs.values():
            for follower in run.followers.values():
                if not isinstance(follower, DocumentFollower):
                    self.on_change(follower.path)

    async def catch_up(self) -> None:
        await self.rescan()
        await self.drain()

    # -- the long-running loops -----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.wakeups.open()
        for run in self.runs.values():
            for follower in run.followers.values():
                if not isinstance(follower, DocumentFollower):
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
            for run in self.runs.values():
                for follower in run.followers.values():
                    if not isinstance(follower, DocumentFollower):
                        await follower.close()

    async def _process_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            await self.drain()

    async def _rescan_loop(self, stop: asyncio.Event) -> None:
        interval = self.settings.daemon.rescan_interval_s
        # Lines appended between the catch-up and the moment inotify watches were in place
        # produced no event: look once more right after the watcher started.
        await asyncio.sleep(0.5)
        await self.rescan()
        elapsed = 0.0
        while not stop.is_set():
            wait = MISSING_RUN_POLL_S if self.missing_runs() else interval
            await asyncio.sleep(min(wait, interval))
            elapsed += min(wait, interval)
            if elapsed >= interval:
                elapsed = 0.0
                await self.rescan()
            elif await self.refresh_runs():
                self._roots_changed.set()
                await self.rescan()

    async def _watch_loop(self, stop: asyncio.Event) -> None:
        step_ms = self.settings.daemon.watch_step_ms
        while not stop.is_set():
            roots = [str(p) for p in self.runs]
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
                    for raw in sorted({raw for _change, raw in changes}, key=_checkpoint_order):
                        self.on_change(Path(raw))
            except FileNotFoundError:
                # A watched run directory was removed; rescan rebuilds the set of roots.
                await asyncio.sleep(MISSING_RUN_POLL_S)
                self.runs = {p: r for p, r in self.runs.items() if p.is_dir()}

    def _filter(self, _change: watchfiles.Change, path: str) -> bool:
        name = os.path.basename(path)
        return bool(CHECKPOINT_DIR.match(name)) or self.rules.may_matter(name)
