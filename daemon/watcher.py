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
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
import watchfiles

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import (
    RecordingFailed,
    RecordingResumed,
    RunEvent,
    SourceError,
    SourceReadable,
    SourceUnreadable,
)
from tunewatch.daemon.sources.discovery import (
    CHECKPOINT_DIR,
    TRAINER_STATE,
    SourceKind,
    SourceRules,
    checkpoint_step,
    scan_run,
)
from tunewatch.daemon.sources.document import DocumentFollower
from tunewatch.daemon.sources.file_access import SourceFault
from tunewatch.daemon.sources.inotify import FileWakeups
from tunewatch.daemon.sources.run_sources import RunSources, make_follower
from tunewatch.daemon.sources.tailer import LogTailer, TailBatch
from tunewatch.daemon.store import AsyncStore, FileState, StoreFailure, valid_text

log = structlog.get_logger(__name__)

# While a configured run directory does not exist yet, look for it this often (one stat call).
MISSING_RUN_POLL_S = 2.0
# Source errors logged per file before the rest are only counted (`tunewatch status` shows all).
LOGGED_ERRORS_PER_FILE = 10
# A document caught mid-write is read again after this delay even if no new change arrives.
DOCUMENT_RETRY_S = 0.25
_GLOB_CHARS = frozenset("*?[")
# An unreadable file is tried again after 1 s, then 2, 4... up to this (a change to it, or a
# rescan, tries it sooner).
SOURCE_RETRY_MAX_S = 300.0
# While the store refuses writes, ingest tries again after 1 s, then 2, 4... up to this.
STORE_RETRY_MAX_S = 60.0


def run_name_for(path: Path) -> str:
    return valid_text(path.name or str(path))


@dataclass
class FileFault:
    """Why one source file is not being read, since when, and when it is tried again."""

    kind: str
    message: str
    since: float  # unix time
    attempts: int = 1
    recorded: bool = False  # its SourceUnreadable is in the store
    retry: asyncio.TimerHandle | None = None

    def retry_delay_s(self) -> float:
        return float(min(2 ** (self.attempts - 1), SOURCE_RETRY_MAX_S))


@dataclass(frozen=True, slots=True)
class RecordingFailure:
    """The store refuses writes: why, and since when."""

    reason: str
    since: float  # unix time


def _scan_sorted(run_dir: Path, rules: SourceRules) -> list[tuple[SourceKind, Path]]:
    found = list(scan_run(run_dir, rules))
    # Older checkpoints first, so that the newest trainer_state is the last one read.
    found.sort(key=lambda kp: checkpoint_step(kp[1]) if kp[0] is SourceKind.TRAINER_STATE else 0)
    return found


def _source_name(run: RunSources, path: Path) -> str:
    rel = run.relative(path)
    return valid_text(str(rel) if rel is not None else path.name)


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
        # Path (as text) -> why that file is not being read now.
        self.faults: dict[str, FileFault] = {}
        # Set while the store refuses writes; `retry_store=False` (`run --once`) gives up instead.
        self.recording_failure: RecordingFailure | None = None
        self.retry_store = retry_store
        self._store_attempts = 0
        self._reading: tuple[Path, float] | None = None  # the read in flight, since (monotonic)
        # Set when a fault or a store failure starts or ends, so STATUS= follows at once.
        self.health_changed = asyncio.Event()

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
                self.store.store.ensure_run, valid_text(str(path)), run_name_for(path)
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
            if run is None:
                continue
            try:
                await self._process(run, kind, path)
            except StoreFailure as exc:
                # Nothing of it was recorded: read it again once the store takes writes.
                self._dirty[(run_path, path)] = kind
                await self._wait_for_store(str(exc))
        self._wake.clear()

    async def _process(self, run: RunSources, kind: SourceKind, path: Path) -> None:
        """Read what is new in one file and record it; a failure is contained to this file."""
        key = run.follower_key(kind, path)
        fault = self.faults.get(valid_text(str(path)))
        try:
            await self._ingest(run, kind, path, key)
        except StoreFailure:
            await self._drop_follower(run, key)  # its position goes back to the committed one
            raise
        except SourceFault as exc:
            await self._drop_follower(run, key)
            await self._file_fault(run, kind, path, exc.kind, exc.message)
        except Exception as exc:  # a bug, or something no test foresaw: this file only
            if fault is None or fault.kind != "internal_error":
                log.exception("reading a source failed", run=run.name, path=valid_text(str(path)))
            await self._drop_follower(run, key)
            message = f"{type(exc).__name__}: {exc}"
            await self._file_fault(run, kind, path, "internal_error", message)
        else:
            if fault is not None:
                await self._file_readable(run, kind, path, fault)

    async def _ingest(self, run: RunSources, kind: SourceKind, path: Path, key: str) -> None:
        follower = run.followers.get(key)
        if follower is None:
            state = await self.store.call(self.store.store.file_state, key)
            follower = make_follower(run, kind, path, state, self.settings)
            run.followers[key] = follower
        if isinstance(follower, DocumentFollower):
            self._reading = (path, time.monotonic())
            try:
                batch = await follower.read(path)
            finally:
                self._reading = None
            if batch is not None:
                self._publish(await self._record(run, batch.events, batch.state))
            if follower.wants_retry():
                asyncio.get_running_loop().call_later(DOCUMENT_RETRY_S, self.mark, run, kind, path)
            return
        await self._ingest_log(run, follower)
        self.wakeups.watch(path)

    async def _ingest_log(self, run: RunSources, follower: LogTailer) -> None:
        # Parse the next batch while the store thread commits the previous one (SQLite releases
        # the GIL while it writes); events are still published only after their commit.
        in_flight: asyncio.Future[Sequence[RunEvent]] | None = None
        try:
            while (batch := await self._read_log(follower)) is not None:
                if in_flight is not None:
                    self._publish(await in_flight)
                in_flight = asyncio.ensure_future(self._record(run, batch.events, batch.state))
        finally:
            # Even when reading failed, what was committed is published.
            if in_flight is not None:
                self._publish(await in_flight)

    async def _read_log(self, follower: LogTailer) -> TailBatch | None:
        self._reading = (follower.path, time.monotonic())
        try:
            return await follower.read()
        finally:
            self._reading = None

    def stuck_read(self) -> tuple[str, float] | None:
        """(path, seconds) of a file read that has not come back yet, if one is in flight."""
        if self._reading is None:
            return None
        path, since = self._reading
        return valid_text(str(path)), time.monotonic() - since

    async def _record(
        self, run: RunSources, events: Sequence[RunEvent], state: FileState | None
    ) -> Sequence[RunEvent]:
        """Commit events (and the file position after them); returns what was recorded."""
        recorded = await self.store.call(self.store.store.commit_batch, run.run_id, events, state)
        if self.recording_failure is not None:
            self._recording_resumed()
        return recorded

    def _publish(self, events: Sequence[RunEvent]) -> None:
        self.batches_committed += 1
        self._log_errors(events)
        self.bus.publish_many(events)

    async def _drop_follower(self, run: RunSources, key: str) -> None:
        follower = run.followers.pop(key, None)
        if isinstance(follower, LogTailer):
            with contextlib.suppress(OSError):
                await follower.close()

    # -- faults -------------------------------------------------------------------------------

    async def _file_fault(
        self, run: RunSources, kind: SourceKind, path: Path, fault_kind: str, message: str
    ) -> None:
        """Remember why `path` is not read, say it once, and try it again with backoff."""
        key = valid_text(str(path))
        fault = self.faults.get(key)
        if fault is not None and fault.kind == fault_kind:
            fault.attempts += 1
        else:
            if fault is not None and fault.retry is not None:
                fault.retry.cancel()
            fault = FileFault(fault_kind, message, time.time())
            self.faults[key] = fault
            self.health_changed.set()
            log.warning(
                "cannot read a source; the other files go on, this one is retried",
                run=run.name,
                path=valid_text(str(path)),
                kind=fault_kind,
                reason=message,
            )
        if fault.retry is not None:
            fault.retry.cancel()
        fault.retry = asyncio.get_running_loop().call_later(
            fault.retry_delay_s(), self.mark, run, kind, path
        )
        if not fault.recorded:
            event = SourceUnreadable(
                run.name, _source_name(run, path), fault_kind, message, valid_text(str(path))
            )
            self._publish(await self._record(run, [event], None))
            fault.recorded = True

    async def _file_readable(
        self, run: RunSources, kind: SourceKind, path: Path, fault: FileFault
    ) -> None:
        del self.faults[valid_text(str(path))]
        self.health_changed.set()
        if fault.retry is not None:
            fault.retry.cancel()
        down_s = time.time() - fault.since
        log.info("source readable again", run=run.name, path=valid_text(str(path)))
        event = SourceReadable(run.name, _source_name(run, path), valid_text(str(path)), down_s)
        self._publish(await self._record(run, [event], None))

    async def _wait_for_store(self, reason: str) -> None:
        """The store refused a write: say so once, then wait before the next attempt."""
        if not self.retry_store:
            raise StoreFailure(reason)
        if self.recording_failure is None:
            self.recording_failure = RecordingFailure(reason, time.time())
            self.health_changed.set()
            self._store_attempts = 0
            log.error(
                "cannot record: nothing is lost, reading resumes when the store takes writes",
                reason=reason,
            )
            self.bus.publish(RecordingFailed(reason, self.recording_failure.since))
        self._store_attempts += 1
        await asyncio.sleep(min(2.0 ** (self._store_attempts - 1), STORE_RETRY_MAX_S))

    def _recording_resumed(self) -> None:
        failure = self.recording_failure
        assert failure is not None
        self.recording_failure = None
        self.health_changed.set()
        log.info("recording again", stopped_for_s=round(time.time() - failure.since, 1))
        self.bus.publish(RecordingResumed(failure.reason, failure.since))

    def _log_errors(self, events: Sequence[RunEvent]) -> None:
        for event in events:
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
            await self.close_files()

    async def close_files(self) -> None:
        """Close every followed file (reading resumes from the store's positions)."""
        for run in self.runs.values():
            for key in list(run.followers):
                await self._drop_follower(run, key)

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
