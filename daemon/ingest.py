"""Reads one source file's new data and records it, with every failure contained to that file.

Each batch read is committed to the store together with the file's new position, and published
on the bus only after that commit: a restart resumes exactly after the last batch. A file that
cannot be read is reported once and retried with backoff; a store that refuses writes stops
ingest without losing anything (positions do not advance) and is retried until it works.

Followers cost a descriptor and memory, so only files written to lately stay open (at most
`open_file_budget()`); the others are let go once read to their end and remembered by their
signature, which a later stat compares against before anything is opened again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import structlog

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
from tunewatch.daemon.run_progress import follow, implied_status
from tunewatch.daemon.sources.discovery import SourceKind
from tunewatch.daemon.sources.document import DocumentFollower
from tunewatch.daemon.sources.file_access import SourceFault, signature_of
from tunewatch.daemon.sources.inotify import FileWakeups
from tunewatch.daemon.sources.run_sources import Follower, RunSources, make_follower
from tunewatch.daemon.sources.tailer import LogTailer, TailBatch
from tunewatch.daemon.store import AsyncStore, Batch, FileState, StoreFailure
from tunewatch.daemon.text import storable_text

log = structlog.get_logger(__name__)

# Source errors logged per file before the rest are only counted (`tunewatch status` shows all).
LOGGED_ERRORS_PER_FILE = 10
# A document caught mid-write is read again after this delay even if no new change arrives.
DOCUMENT_RETRY_S = 0.25
# An unreadable file is tried again after 1 s, then 2, 4... up to this (a change to it, or a
# rescan, tries it sooner).
SOURCE_RETRY_MAX_S = 300.0
# While the store refuses writes, ingest tries again after 1 s, then 2, 4... up to this.
STORE_RETRY_MAX_S = 60.0
# A file not written for this long is closed (and reopened when it changes).
IDLE_CLOSE_S = 300.0
# A run not written for this long (or finished) gets no watches: the slow rescan covers it.
ACTIVE_WINDOW_S = 6 * 3600.0
# Files kept open at most, the most recently written first: this many, or a quarter of the
# open-file limit if that is less (the store, sockets, watches and plugins need the rest).
MAX_OPEN_FILES = 256

# Files with more than this left to read count as bulk; at most BULK_READERS are read at once
# (the peak memory of a catch-up), however many runs drain together.
BULK_BACKLOG_BYTES = 256 << 10
BULK_READERS = 2

Mark = Callable[[RunSources, SourceKind, Path], None]


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


class Ingest:
    """Reads, records and publishes what is new in source files, one file at a time."""

    def __init__(
        self,
        settings: Settings,
        store: AsyncStore,
        bus: EventBus,
        wakeups: FileWakeups,
        mark: Mark,
        *,
        retry_store: bool = True,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.wakeups = wakeups
        self.mark = mark
        self.batches_committed = 0
        # Path (as text) -> why that file is not being read now.
        self.faults: dict[str, FileFault] = {}
        # Set while the store refuses writes; `retry_store=False` (`run --once`) gives up instead.
        self.recording_failure: RecordingFailure | None = None
        self.retry_store = retry_store
        # Set when a fault or a store failure starts or ends, so STATUS= follows at once.
        self.health_changed = asyncio.Event()
        # Set once the start-up catch-up is over: data read after it is news.
        self.live = False
        # Set when a run that was not active gets new data (the watcher then watches it).
        self.became_active = asyncio.Event()
        # While catching up, the stored positions of every file, loaded in one query.
        self.known_states: dict[str, FileState] | None = None
        self._handed_out: set[str] = set()  # keys a follower was made for during the catch-up
        self._store_attempts = 0
        self._store_retry_at = 0.0  # monotonic time of the next attempt while the store fails
        self._reading: tuple[Path, float] | None = None  # the read in flight, since (monotonic)
        self._errors_logged: Counter[tuple[str, str]] = Counter()
        self._open: OrderedDict[tuple[Path, str], RunSources] = OrderedDict()
        self._bulk = asyncio.Semaphore(BULK_READERS)
        self._open_budget = open_file_budget()

    # -- one file -------------------------------------------------------------------------------

    async def process(self, run: RunSources, kind: SourceKind, path: Path) -> None:
        """Read what is new in one file and record it; a failure is contained to this file.

        Raises `StoreFailure` (nothing of the file was recorded) for the caller to retry.
        """
        key = run.follower_key(kind, path)
        if key not in run.followers and self._resting_unchanged(run, path):
            return
        fault = self.faults.get(storable_text(str(path)))
        try:
            await self._ingest(run, kind, path, key)
        except StoreFailure:
            await self.retire(run, key, remember=False)  # back to the committed position
            raise
        except Exception as exc:
            await self._contain(run, kind, path, exc)
        else:
            if fault is not None:
                await self._file_readable(run, path, fault)
            await self._keep_or_retire(run, key)

    def is_hot(self, run: RunSources, kind: SourceKind, path: Path) -> bool:
        """Whether `path` is an open log with no fault: `process_hot` can read it."""
        follower = run.followers.get(run.follower_key(kind, path))
        return (
            isinstance(follower, LogTailer)
            and follower.is_open
            and storable_text(str(path)) not in self.faults
        )

    async def process_hot(self, files: Sequence[tuple[RunSources, SourceKind, Path]]) -> None:
        """`process` for open logs (`is_hot`), in one trip to a worker thread for all reads
        and one commit for all: many runs logging at once cost little more than one.

        Raises `StoreFailure` once every file it kept out was marked to be read again.
        """
        tailers = [run.followers[run.follower_key(kind, path)] for run, kind, path in files]
        assert all(isinstance(t, LogTailer) for t in tailers)
        read = await asyncio.to_thread(_read_each, cast(list[LogTailer], tailers))
        recording: list[tuple[RunSources, SourceKind, Path]] = []
        batches: list[Batch] = []
        for (run, kind, path), tailer, result in zip(files, tailers, read, strict=True):
            if isinstance(result, Exception):
                await self._contain(run, kind, path, result)
            elif result is not None:
                recording.append((run, kind, path))
                batches.append((run.run_id, self._with_progress(run, result.events), result.state))
                assert isinstance(tailer, LogTailer) and tailer.last_stat is not None
                self._touch(run, tailer.last_stat.st_mtime)
                if not result.at_end:
                    self.mark(run, kind, path)  # more to read: the next round reads on
        if not batches:
            return
        results = await self.store.call(self.store.store.commit_batches, batches)
        failure: StoreFailure | None = None
        for (run, kind, path), recorded in zip(recording, results, strict=True):
            if isinstance(recorded, StoreFailure):
                await self.retire(run, run.follower_key(kind, path), remember=False)
                self.mark(run, kind, path)
                failure = recorded
                continue
            self._recorded(run, recorded)
            self._publish(recorded)
            opened = (run.path, run.follower_key(kind, path))
            if opened in self._open:
                self._open.move_to_end(opened)  # the most recently written stay open
        if failure is not None:
            raise failure

    async def _contain(self, run: RunSources, kind: SourceKind, path: Path, exc: Exception) -> None:
        """Keep what went wrong reading `path` to that file: let it go, say why, retry later."""
        await self.retire(run, run.follower_key(kind, path), remember=False)
        if isinstance(exc, SourceFault):
            await self._file_fault(run, kind, path, exc.kind, exc.message)
            return
        where = storable_text(str(path))
        fault = self.faults.get(where)
        if fault is None or fault.kind != "internal_error":  # a bug: its traceback, once
            log.error("reading a source failed", run=run.name, path=where, exc_info=exc)
        await self._file_fault(run, kind, path, "internal_error", f"{type(exc).__name__}: {exc}")

    def _resting_unchanged(self, run: RunSources, path: Path) -> bool:
        signature = run.resting.get(path)
        if signature is None:
            return False
        try:
            unchanged = signature_of(os.stat(path)) == signature
        except OSError:
            unchanged = False
        if not unchanged:
            del run.resting[path]
        return unchanged

    async def _ingest(self, run: RunSources, kind: SourceKind, path: Path, key: str) -> None:
        follower = run.followers.get(key)
        if follower is None:
            follower = make_follower(run, kind, path, await self._state(key), self.settings)
            run.followers[key] = follower
        if isinstance(follower, DocumentFollower):
            self._reading = (path, time.monotonic())
            try:
                batch = await follower.read(path)
            finally:
                self._reading = None
            if batch is not None:
                self._publish(await self._record(run, batch.events, batch.state))
            signature = follower.signatures.get(path)
            if signature is not None:
                self._touch(run, signature[3] / 1e9)  # the document's mtime
            if follower.wants_retry():
                asyncio.get_running_loop().call_later(DOCUMENT_RETRY_S, self.mark, run, kind, path)
            return
        await self._ingest_log(run, follower)

    async def _state(self, key: str) -> FileState | None:
        if self.known_states is not None:
            first_time = key not in self._handed_out
            self._handed_out.add(key)
            if key in self.known_states:
                return self.known_states.pop(key)
            if first_time:
                return None  # not in the store: a file never read before
        # A follower made again (its run was closed to free descriptors, or every checkpoint's
        # trainer_state.json shares one key): the store has what it committed since. Before,
        # the catch-up handed it a fresh cursor, and a restart re-read a finished run's
        # checkpoints from the second one on, alerts included.
        return await self.store.call(self.store.store.file_state, key)

    async def _ingest_log(self, run: RunSources, follower: LogTailer) -> None:
        # A long backlog (a big log read at start) is read by at most BULK_READERS workers at a
        # time: each holds about a MiB of lines and their parsed records while it works.
        if follower.backlog() > BULK_BACKLOG_BYTES:
            async with self._bulk:
                await self._read_and_record(run, follower)
        else:
            await self._read_and_record(run, follower)
        if follower.last_stat is not None:  # written lately, even if tunewatch read it before
            self._touch(run, follower.last_stat.st_mtime)

    async def _read_and_record(self, run: RunSources, follower: LogTailer) -> None:
        # Parse the next batch while the store thread commits the previous one (SQLite releases
        # the GIL while it writes); events are still published only after their commit.
        in_flight: asyncio.Future[Sequence[RunEvent]] | None = None
        try:
            while (batch := await self._read_log(follower)) is not None:
                if in_flight is not None:
                    self._publish(await in_flight)
                in_flight = asyncio.ensure_future(self._record(run, batch.events, batch.state))
                if batch.at_end:
                    break
        finally:
            # Even when reading failed, what was committed is published.
            if in_flight is not None:
                self._publish(await in_flight)

    def _touch(self, run: RunSources, written: float) -> None:
        """`run` got data written at `written` (unix time)."""
        now = time.time()
        was_active = run.active(now, ACTIVE_WINDOW_S)
        run.last_change = max(run.last_change, written)
        if not was_active and run.active(now, ACTIVE_WINDOW_S):
            self.became_active.set()

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
        return storable_text(str(path)), time.monotonic() - since

    async def _record(
        self, run: RunSources, events: Sequence[RunEvent], state: FileState | None
    ) -> Sequence[RunEvent]:
        """Commit events (and the file position after them); returns what was recorded."""
        recorded = await self.store.commit(run.run_id, self._with_progress(run, events), state)
        self._recorded(run, recorded)
        return recorded

    def _with_progress(self, run: RunSources, events: Sequence[RunEvent]) -> Sequence[RunEvent]:
        """`events`, and the status change they imply (the run finished), committed together."""
        implied = implied_status(run, events, live=self.live)
        return events if implied is None else [*events, implied]

    def _recorded(self, run: RunSources, recorded: Sequence[RunEvent]) -> None:
        """What follows a commit that went in."""
        if self.recording_failure is not None:
            self._recording_resumed()
        follow(run, recorded, live=self.live)

    def _publish(self, events: Sequence[RunEvent]) -> None:
        self.batches_committed += 1
        self._log_errors(events)
        self.bus.publish_many(events)

    # -- which files stay open ------------------------------------------------------------------

    async def _keep_or_retire(self, run: RunSources, key: str) -> None:
        follower = run.followers.get(key)
        if follower is None:
            return
        if not self.keeps_open(run, follower):
            await self.retire(run, key)
            return
        if isinstance(follower, LogTailer) and follower.is_open:
            self.wakeups.watch(follower.path)
            self._open[(run.path, key)] = run
            self._open.move_to_end((run.path, key))
            while len(self._open) > self._open_budget:
                (_path, oldest), oldest_run = self._open.popitem(last=False)
                await self.retire(oldest_run, oldest)

    def keeps_open(self, run: RunSources, follower: Follower) -> bool:
        """Whether `follower` is worth its descriptor and memory: its run is active and it
        was written to lately."""
        now = time.time()
        if not run.active(now, ACTIVE_WINDOW_S):
            return False
        if isinstance(follower, LogTailer):
            st = follower.last_stat
            return st is not None and now - st.st_mtime < IDLE_CLOSE_S
        return True

    async def retire(self, run: RunSources, key: str, *, remember: bool = True) -> None:
        """Let a follower go: close its file; with `remember`, rest it by its signature."""
        follower = run.followers.pop(key, None)
        self._open.pop((run.path, key), None)
        if isinstance(follower, LogTailer):
            self.wakeups.unwatch(follower.path)
            if remember and follower.last_stat is not None:
                run.resting[follower.path] = signature_of(follower.last_stat)
            with contextlib.suppress(OSError):
                await follower.close()
        elif isinstance(follower, DocumentFollower) and remember:
            run.resting.update(follower.signatures)

    async def retire_idle(self, runs: Sequence[RunSources]) -> None:
        """Let go of every follower that is no longer worth keeping."""
        for run in runs:
            for key, follower in list(run.followers.items()):
                if not self.keeps_open(run, follower):
                    await self.retire(run, key)

    async def close_all(self, runs: Sequence[RunSources]) -> None:
        """Close every followed file (reading resumes from the store's positions)."""
        for run in runs:
            for key in list(run.followers):
                await self.retire(run, key, remember=False)
            run.resting.clear()

    # -- faults -----------------------------------------------------------------------------------

    async def _file_fault(
        self, run: RunSources, kind: SourceKind, path: Path, fault_kind: str, message: str
    ) -> None:
        """Remember why `path` is not read, say it once, and try it again with backoff."""
        where = storable_text(str(path))
        fault = self.faults.get(where)
        if fault is not None and fault.kind == fault_kind:
            fault.attempts += 1
        else:
            if fault is not None and fault.retry is not None:
                fault.retry.cancel()
            fault = FileFault(fault_kind, message, time.time())
            self.faults[where] = fault
            self.health_changed.set()
            log.warning(
                "cannot read a source; the other files go on, this one is retried",
                run=run.name,
                path=where,
                kind=fault_kind,
                reason=message,
            )
        if fault.retry is not None:
            fault.retry.cancel()
        fault.retry = asyncio.get_running_loop().call_later(
            fault.retry_delay_s(), self.mark, run, kind, path
        )
        if not fault.recorded:
            event = SourceUnreadable(run.name, _source_name(run, path), fault_kind, message, where)
            self._publish(await self._record(run, [event], None))
            fault.recorded = True

    async def _file_readable(self, run: RunSources, path: Path, fault: FileFault) -> None:
        where = storable_text(str(path))
        del self.faults[where]
        self.health_changed.set()
        if fault.retry is not None:
            fault.retry.cancel()
        log.info("source readable again", run=run.name, path=where)
        event = SourceReadable(run.name, _source_name(run, path), where, time.time() - fault.since)
        self._publish(await self._record(run, [event], None))

    async def wait_for_store(self, reason: str) -> None:
        """The store refused a write: say so once, then wait until the next attempt is due.

        Every reader that met the failure waits for the same next attempt.
        """
        if not self.retry_store:
            raise StoreFailure(reason)
        now = time.monotonic()
        if self.recording_failure is None:
            self.recording_failure = RecordingFailure(reason, time.time())
            self.health_changed.set()
            self._store_attempts = 0
            self._store_retry_at = now
            log.error(
                "cannot record: nothing is lost, reading resumes when the store takes writes",
                reason=reason,
            )
            self.bus.publish(RecordingFailed(reason, self.recording_failure.since))
        if now >= self._store_retry_at:
            self._store_attempts += 1
            delay = min(2.0 ** (self._store_attempts - 1), STORE_RETRY_MAX_S)
            self._store_retry_at = now + delay
        await asyncio.sleep(self._store_retry_at - now)

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


def open_file_budget() -> int:
    """How many source files may stay open at once under this process's open-file limit."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_FILES
    return max(1, min(MAX_OPEN_FILES, soft // 4))


def _read_each(tailers: Sequence[LogTailer]) -> list[TailBatch | Exception | None]:
    """Each tailer's next batch, or what it raised (in a worker thread)."""
    results: list[TailBatch | Exception | None] = []
    for tailer in tailers:
        try:
            results.append(tailer.read_now())
        except Exception as exc:  # handled per file by the caller
            results.append(exc)
    return results


def _source_name(run: RunSources, path: Path) -> str:
    rel = run.relative(path)
    return storable_text(str(rel) if rel is not None else path.name)
