"""The daemon's durable state: one SQLite database in WAL mode.

It holds the runs, each tailed file's position, every metric point and the history of events.
A batch of events and the file position that produced it are committed in one transaction, so
a restart (even after SIGKILL) resumes with no gap and no duplicate. The daemon is the only
writer; `status`, `events` and `report` open their own read connections while it runs.
Blocking calls never run on the event loop: `AsyncStore` runs them on one dedicated thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson
import structlog

from tunewatch.daemon import events as ev
from tunewatch.daemon.history import HistoryRow, is_recorded, to_row
from tunewatch.daemon.latest import (
    LATEST_SCHEMA,
    UPSERT_LATEST_METRIC,
    UPSERT_LATEST_STEP,
    Latest,
    LatestValue,
    latest_values,
    newest_points,
)
from tunewatch.daemon.metric_chunks import (
    CHUNK_POINTS,
    INSERT_SQL,
    PackedChunk,
    chunk_rows,
    pack_batch,
    pack_points,
    unpack,
)
from tunewatch.daemon.store_migrations import migrate_from_v1, migrate_from_v2
from tunewatch.daemon.text import storable_text

SCHEMA_VERSION = 3

P = ParamSpec("P")
R = TypeVar("R")

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    status TEXT,
    total_steps INTEGER,
    pid INTEGER,
    status_step INTEGER,  -- the step and source that reported `status` (see _apply_status)
    status_source TEXT,
    first_seen REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    key TEXT PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    source TEXT NOT NULL,
    dev INTEGER NOT NULL DEFAULT 0,
    ino INTEGER NOT NULL DEFAULT 0,
    fingerprint BLOB NOT NULL DEFAULT x'',
    offset INTEGER NOT NULL DEFAULT 0,
    line_no INTEGER NOT NULL DEFAULT 0,
    cursor TEXT,
    errors INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
-- Metric points are stored in chunks of consecutive points (by seq) from one source, column by
-- column, the way time-series databases do: one row per point costs more than parsing the line
-- did, and catch-up on a million-line log must stay fast. See daemon/metric_chunks.py.
CREATE TABLE IF NOT EXISTS metric_chunks (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    source TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    max_step INTEGER NOT NULL,
    last_time REAL NOT NULL,
    names TEXT NOT NULL,
    data BLOB NOT NULL,
    seqs BLOB  -- the kept points' seqs once thinned; NULL while they run from first_seq on
);
CREATE INDEX IF NOT EXISTS chunks_by_run ON metric_chunks(run_id, last_seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    run_id INTEGER REFERENCES runs(id),
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    summary TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events(time);
CREATE INDEX IF NOT EXISTS events_by_run_kind ON events(run_id, kind, seq);
CREATE TABLE IF NOT EXISTS plugin_state (
    plugin TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (plugin, key)
);
"""
    + LATEST_SCHEMA
)


# What one file's read hands to the store: the run, its events, the file position after them.
Batch = tuple[int, Sequence[ev.RunEvent], "FileState | None"]

# The columns of a metric chunk row, in the order `metric_chunks.unpack` takes them.
_UNPACK_COLUMNS = "source, first_seq, names, data, seqs"


class StoreError(Exception):
    """The state database cannot be used (wrong schema version, unreadable file)."""


class StateDirError(StoreError):
    """The state directory or database cannot be opened at all (permissions, not a directory)."""


class StoreFailure(StoreError):
    """The database refused a write (disk full, I/O error...): nothing of it was recorded.

    The caller keeps what it wanted to record and tries again later; the connection stays
    usable, so writes resume by themselves once the cause is gone.
    """


# Errors that come from the data being written rather than from the database: binding text
# that is not valid UTF-8, a number too large for SQLite, a value of an unexpected type.
_DATA_ERRORS = (
    TypeError,
    ValueError,
    OverflowError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
)

log = structlog.get_logger(__name__)
# Batches committed together at most (a group commit of a catch-up stays a few MB).
MAX_GROUP_BATCHES = 64


@dataclass(frozen=True, slots=True)
class FileState:
    """Where reading of one tailed file (or one rewritten document) stopped."""

    key: str
    run_id: int
    source: str
    dev: int = 0
    ino: int = 0
    fingerprint: bytes = b""
    offset: int = 0
    line_no: int = 0
    cursor: str | None = None
    errors: int = 0


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Where reading of one file stands, as `tunewatch status` shows it."""

    key: str
    source: str
    offset: int
    lines: int
    errors: int


@dataclass(frozen=True, slots=True)
class RunRow:
    id: int
    path: str
    name: str
    status: str | None
    total_steps: int | None
    pid: int | None
    updated: float


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    row: HistoryRow


@dataclass(frozen=True, slots=True)
class MetricPoint:
    seq: int
    run: str
    step: int
    time: float
    source: str
    metrics: dict[str, float]


def _stamp(event: ev.Event, seq: int) -> None:
    # Events are frozen for consumers; the store is the one place that assigns their position
    # in the durable log, after parsing and before anyone else can see the event.
    object.__setattr__(event, "seq", seq)


class Store:
    """Synchronous access to the state database. Use from one thread (see `AsyncStore`)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self._names: dict[int, str] | None = None
        if readonly and not path.exists():
            _raise_missing(path)
        try:
            self.db = self._connect(readonly)
            self.db.execute("PRAGMA busy_timeout = 10000")
            if readonly:
                self._check_version()
            else:
                self._migrate()
            self._next_seq = self._max_seq() + 1
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StateDirError(
                f"cannot use the state database {path}: {reason}; make its directory writable "
                "or choose another with [daemon] state_dir"
            ) from exc

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if readonly:
            # A URI, so that '?' or '#' in the path stay part of the path.
            uri = self.path.resolve().as_uri() + "?mode=ro"
            return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=10)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return sqlite3.connect(self.path, check_same_thread=False, timeout=10)

    def _migrate(self) -> None:
        mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
        # NORMAL is durable across process crashes in WAL mode; only power loss can drop the
        # last commits, and then offsets and events roll back together.
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute("PRAGMA foreign_keys = ON")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this tunewatch "
                f"({SCHEMA_VERSION}); upgrade tunewatch"
            )
        if version == 1:
            migrate_from_v1(self.db, _SCHEMA)
            version = 2
        if version == 2:
            migrate_from_v2(self.db)
        with self.db:
            self.db.executescript(_SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_version(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by an older tunewatch (schema {version}); restart the "
                "daemon once (`systemctl --user restart tunewatch` or `tunewatch run`) to "
                "upgrade it"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer tunewatch (schema {version}); upgrade "
                "tunewatch"
            )

    def _max_seq(self) -> int:
        row = self.db.execute(
            "SELECT max(coalesce((SELECT max(last_seq) FROM metric_chunks), 0),"
            " coalesce((SELECT max(seq) FROM events), 0))"
        ).fetchone()
        return int(row[0] or 0)

    def last_seq(self) -> int:
        """The seq of the newest recorded event or point (0 when nothing is recorded)."""
        return self._next_seq - 1

    def close(self) -> None:
        self.db.close()

    # -- runs ---------------------------------------------------------------------------------

    def ensure_run(self, path: str, name: str) -> int:
        """The id of the run at `path`, registering it (under a unique `name`) if new."""
        return self.ensure_runs([(path, name)])[0][0]

    def ensure_runs(self, wanted: Sequence[tuple[str, str]]) -> list[tuple[int, str]]:
        """(id, name) for each (path, name) in `wanted`, registering the new ones at once.

        The same as `ensure_run` for each, in one transaction: ten thousand run directories
        found at start cost one commit, not ten thousand.
        """
        known = {
            path: (rid, name)
            for rid, path, name in self.db.execute("SELECT id, path, name FROM runs")
        }
        taken = {name for _rid, name in known.values()}
        now = time.time()
        result = []
        with self.db:
            for path, name in wanted:
                if path in known:
                    result.append(known[path])
                    continue
                unique, n = name, 2
                while unique in taken:
                    unique, n = f"{name}-{n}", n + 1
                cur = self.db.execute(
                    "INSERT INTO runs (path, name, first_seen, updated) VALUES (?, ?, ?, ?)",
                    (path, unique, now, now),
                )
                known[path] = (int(cur.lastrowid or 0), unique)
                taken.add(unique)
                result.append(known[path])
                self._names = None
        return result

    def runs(self) -> list[RunRow]:
        rows = self.db.execute(
            "SELECT id, path, name, status, total_steps, pid, updated FROM runs ORDER BY id"
        ).fetchall()
        return [RunRow(*r) for r in rows]

    def run_names(self) -> dict[int, str]:
        """Run id -> name. Cached: names never change, and only `ensure_runs` adds runs (a
        read-only store sees runs added by the daemon after it opened only if it reopens)."""
        if self._names is None:
            self._names = dict(self.db.execute("SELECT id, name FROM runs").fetchall())
        return self._names

    # -- file positions -------------------------------------------------------------------------

    def file_state(self, key: str) -> FileState | None:
        row = self.db.execute(
            "SELECT key, run_id, source, dev, ino, fingerprint, offset, line_no, cursor, errors"
            " FROM files WHERE key = ?",
            (key,),
        ).fetchone()
        return FileState(*row) if row else None

    def file_states(self, run_id: int | None = None) -> list[FileState]:
        sql = (
            "SELECT key, run_id, source, dev, ino, fingerprint, offset, line_no, cursor, errors"
            " FROM files"
        )
        args: tuple[Any, ...] = ()
        if run_id is not None:
            sql += " WHERE run_id = ?"
            args = (run_id,)
        return [FileState(*r) for r in self.db.execute(sql + " ORDER BY key", args).fetchall()]

    # -- the ingest transaction -----------------------------------------------------------------

    def commit_batch(
        self, run_id: int, events: Sequence[ev.RunEvent], state: FileState | None
    ) -> Sequence[ev.RunEvent]:
        """Record `events` and the file position after them, atomically; stamps each event's seq.

        Returns the events recorded, to be published. Events the database cannot hold (text
        that is not valid UTF-8...) are recorded with their text escaped, or as one
        `SourceError`: bad data costs its own events, never the file's position. Raises
        `StoreFailure` when the database refuses the write; then nothing was recorded.
        """
        try:
            self._commit([(run_id, events, state)])
            return events
        except _DATA_ERRORS as exc:
            self._after_failure()
            log.warning("events the store cannot hold; escaping their text", error=repr(exc))
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc
        escaped = [escape_event_text(e) for e in events]
        try:
            self._commit([(run_id, escaped, state)])
            return escaped
        except _DATA_ERRORS as exc:
            self._after_failure()
            log.exception("events the store cannot hold; recording an error instead")
            error = _unrecordable(events, state, exc)
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc
        try:
            self._commit([(run_id, [error], state)])
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc
        return [error]

    def commit_batches(
        self, batches: Sequence[Batch]
    ) -> list[Sequence[ev.RunEvent] | StoreFailure]:
        """`commit_batch` for each of `batches`, in one transaction when they all go in.

        Lines that arrive together in many files cost one commit, not one each. Each batch gets
        its own result: the events recorded, or the `StoreFailure` that kept it out.
        """
        if len(batches) > 1:
            try:
                self._commit(batches)
                return [events for _run_id, events, _state in batches]
            except _DATA_ERRORS:
                self._after_failure()  # one batch holds bad data: each on its own, below
            except sqlite3.Error as exc:
                failure = self._failure(exc)
                return [failure for _batch in batches]
        results: list[Sequence[ev.RunEvent] | StoreFailure] = []
        for batch in batches:
            try:
                results.append(self.commit_batch(*batch))
            except StoreFailure as exc:
                results.append(exc)
        return results

    def _failure(self, exc: sqlite3.Error) -> StoreFailure:
        self._after_failure()
        return StoreFailure(f"{exc} ({self.path})")

    def _after_failure(self) -> None:
        # The transaction rolled back: seqs stamped on the lost events are free again.
        if self.db.in_transaction:
            self.db.rollback()
        self._next_seq = self._max_seq() + 1

    def _commit(self, batches: Sequence[Batch]) -> None:
        now = time.time()
        seq = self._next_seq
        rows = _Rows()
        with self.db:
            for run_id, events, state in batches:
                seq = self._write(run_id, events, seq, now, rows)
                if state is not None:
                    rows.files.append(_file_row(state, now))
            # One statement per table for the whole group: a group commit of lines from a
            # hundred runs is a handful of calls into SQLite, not several per run.
            self.db.executemany(INSERT_SQL, rows.chunks)
            self.db.executemany(UPSERT_LATEST_METRIC, rows.latest_metrics)
            self.db.executemany(UPSERT_LATEST_STEP, rows.latest_steps)
            self.db.executemany(_UPSERT_FILE, rows.files)
        self._next_seq = seq

    def _write(
        self, run_id: int, events: Sequence[ev.RunEvent], seq: int, now: float, rows: _Rows
    ) -> int:
        """Stamp seqs on `events` from `seq` on and add their rows to `rows`; records history
        events at once (inside the open transaction). Returns the next free seq."""
        chunks: list[PackedChunk] = []
        pending: list[ev.MetricsLogged] = []  # single points waiting to fill a chunk
        latest = Latest()
        for event in events:
            _stamp(event, seq)
            if isinstance(event, ev.MetricsBatch):
                if pending:
                    chunks.append(pack_points(pending))
                    pending = []
                chunks.extend(pack_batch(event))
                latest.add_batch(event)
                seq += len(event)
                continue
            if isinstance(event, ev.MetricsLogged):
                latest.add_point(event.source, event.seq, event.step, event.time, event.metrics)
                if pending and (
                    event.source != pending[0].source
                    or pending[-1].seq != seq - 1
                    or len(pending) >= CHUNK_POINTS
                ):
                    chunks.append(pack_points(pending))
                    pending = []
                pending.append(event)
            else:
                self._insert_history(event, run_id, event.seq)
                self._apply_status(event, run_id, now)
            seq += 1
        if pending:
            chunks.append(pack_points(pending))
        rows.chunks.extend(chunk_rows(run_id, chunks))
        rows.latest_metrics.extend(latest.metric_rows(run_id))
        rows.latest_steps.extend(latest.step_rows(run_id))
        return seq

    def _apply_status(self, event: ev.Event, run_id: int, now: float) -> None:
        """Make a reported status the run's current one, unless it is older news.

        Sources are read in no fixed order: catching up on a finished run can read the status
        file's "completed" at step 30 before checkpoint-10's trainer_state.json, whose progress
        implies "training" at step 10. A status about an earlier or the same step, from another
        source, is kept in the history only. The same source going back in steps is news (a
        run resumed from an earlier checkpoint) and applies.
        """
        if not isinstance(event, ev.StatusChanged):
            return
        status, step, source = self.db.execute(
            "SELECT status, status_step, status_source FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        # A run that finished at a step is finished, whichever source saw it first; but what
        # tunewatch inferred never replaces the end the trainer reported itself at that step
        # ("completed" stays, whether the implied "finished" is committed before or after it).
        finishing = (
            event.status in ev.FINISHED_STATUSES
            and event.step is not None
            and (step is None or event.step >= step)
            and not (event.implied and status in ev.FINISHED_STATUSES and event.step == step)
        )
        if (
            event.step is None
            or step is None
            or event.source == source
            or event.step > step
            or finishing
        ):
            status, step, source = event.status, event.step, event.source
        self.db.execute(
            "UPDATE runs SET status = ?, status_step = ?, status_source = ?,"
            " total_steps = coalesce(?, total_steps), pid = coalesce(?, pid), updated = ?"
            " WHERE id = ?",
            (status, step, source, event.total_steps, event.pid, now, run_id),
        )

    def _insert_history(self, event: ev.Event, run_id: int | None, seq: int) -> None:
        row = to_row(event)
        self.db.execute(
            "INSERT INTO events (seq, time, run_id, kind, severity, summary, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                row.time,
                run_id,
                row.kind,
                row.severity,
                row.summary,
                orjson.dumps(row.data, option=orjson.OPT_NON_STR_KEYS, default=str).decode(),
            ),
        )

    def record(self, event: ev.Event) -> int | None:
        """Record one plugin event (anomaly, best model, report...) in the history."""
        seqs = self.record_many([event])
        return seqs[0] if seqs else None

    def record_many(self, events: Sequence[ev.Event]) -> list[int]:
        """Record plugin events in the history, in one transaction; their seqs, in order.
        Events that are not recorded kinds are skipped."""
        names = {name: run_id for run_id, name in self.run_names().items()}
        seq = self._next_seq
        seqs = []
        try:
            with self.db:
                for event in events:
                    if not is_recorded(event):
                        continue
                    run = getattr(event, "run", None)
                    self._insert_history(event, names.get(run) if run else None, seq)
                    seqs.append(seq)
                    seq += 1
        except sqlite3.Error as exc:
            raise self._failure(exc) from exc
        self._next_seq = seq
        return seqs

    # -- downsampling -----------------------------------------------------------------------------

    def downsample(self, older_than: float, keep_every: int, max_chunks: int = 100) -> int:
        """Thin up to `max_chunks` chunks whose newest point is older than `older_than`.

        See `PackedChunk.thinned` for what is kept. Each chunk is thinned once. Returns the
        number of chunks thinned, so a caller repeats while it gets `max_chunks` back.
        """
        found = self.db.execute(
            f"SELECT id, {_UNPACK_COLUMNS} FROM metric_chunks"
            " WHERE seqs IS NULL AND last_time < ? ORDER BY id LIMIT ?",
            (older_than, max_chunks),
        ).fetchall()
        updates = []
        for chunk_id, *row in found:
            thin = unpack(*row).thinned(keep_every)
            updates.append((len(thin), thin.names_text(), thin.data(), thin.seqs_data(), chunk_id))
        with self.db:
            self.db.executemany(
                "UPDATE metric_chunks SET n = ?, names = ?, data = ?, seqs = ? WHERE id = ?",
                updates,
            )
        return len(updates)

    # -- plugin state ---------------------------------------------------------------------------

    def plugin_get(self, plugin: str, key: str) -> str | None:
        row = self.db.execute(
            "SELECT value FROM plugin_state WHERE plugin = ? AND key = ?", (plugin, key)
        ).fetchone()
        return str(row[0]) if row else None

    def plugin_put(self, plugin: str, key: str, value: str) -> None:
        self.plugin_put_many(plugin, {key: value})

    def plugin_put_many(self, plugin: str, values: Mapping[str, str]) -> None:
        """Save several keys of a plugin's state in one transaction: all or none."""
        with self.db:
            self.db.executemany(
                "INSERT INTO plugin_state (plugin, key, value) VALUES (?, ?, ?)"
                " ON CONFLICT(plugin, key) DO UPDATE SET value = excluded.value",
                [(plugin, key, value) for key, value in values.items()],
            )

    # -- queries --------------------------------------------------------------------------------

    def metrics(
        self,
        run_id: int | None = None,
        after_seq: int = 0,
        source: str | None = None,
        limit: int | None = None,
    ) -> list[MetricPoint]:
        """The recorded points after `after_seq`, oldest first (about `limit` of them, whole
        chunks, when a limit is given)."""
        names = self.run_names()
        sql = f"SELECT run_id, {_UNPACK_COLUMNS} FROM metric_chunks WHERE last_seq > ?"
        args: list[Any] = [after_seq]
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        if source is not None:
            sql += " AND source = ?"
            args.append(source)
        result: list[MetricPoint] = []
        for rid, *row in self.db.execute(sql + " ORDER BY first_seq", args):
            run = names.get(rid, "?")
            chunk = unpack(*row)
            result.extend(
                MetricPoint(seq, run, step, t, chunk.source, values)
                for seq, step, t, values in chunk.points()
                if seq > after_seq
            )
            if limit is not None and len(result) >= limit:
                break
        return result

    # -- every run at once: what `status` and the stall check read ---------------------------

    def latest_values(self, names: Iterable[str]) -> dict[int, dict[str, LatestValue]]:
        """Run id -> metric name -> its newest value, for the metrics `names`."""
        return latest_values(self.db, names)

    def latest_of(self, run: str, names: Iterable[str]) -> dict[str, LatestValue]:
        """Metric name -> its newest value in the run named `run`."""
        run_ids = [rid for rid, name in self.run_names().items() if name == run]
        if not run_ids:
            return {}
        return latest_values(self.db, names, run_ids[0]).get(run_ids[0], {})

    def newest_points(self) -> dict[int, tuple[int, float]]:
        """Run id -> (step, time) of its newest point (see `latest.newest_points`)."""
        return newest_points(self.db)

    def point_counts(self) -> dict[int, int]:
        rows = self.db.execute("SELECT run_id, sum(n) FROM metric_chunks GROUP BY run_id")
        return {run_id: int(n) for run_id, n in rows}

    def event_counts(self, kind: str) -> dict[int, tuple[int, str]]:
        """Run id -> (number of events of `kind`, summary of the newest)."""
        rows = self.db.execute(
            "SELECT e.run_id, c.n, e.summary FROM events e JOIN ("
            "  SELECT run_id, count(*) AS n, max(seq) AS newest FROM events"
            "  WHERE kind = ? AND run_id IS NOT NULL GROUP BY run_id"
            ") c ON e.seq = c.newest",
            (kind,),
        )
        return {run_id: (int(n), str(summary)) for run_id, n, summary in rows}

    def file_positions(self) -> dict[int, list[FilePosition]]:
        """Run id -> where reading of each of its files stands."""
        result: dict[int, list[FilePosition]] = {}
        rows = self.db.execute(
            "SELECT run_id, key, source, offset, line_no, errors FROM files ORDER BY key"
        )
        for run_id, *fields in rows:
            result.setdefault(run_id, []).append(FilePosition(*fields))
        return result

    def history(
        self,
        *,
        run: str | None = None,
        kinds: Iterable[str] = (),
        since: float | None = None,
        exclude_kinds: Iterable[str] = (),
    ) -> list[StoredEvent]:
        """Recorded events, oldest first."""
        names = self.run_names()
        sql = "SELECT seq, time, run_id, kind, severity, summary, data FROM events WHERE 1 = 1"
        args: list[Any] = []
        if run is not None:
            sql += " AND run_id = (SELECT id FROM runs WHERE name = ?)"
            args.append(run)
        kinds = list(kinds)
        if kinds:
            sql += f" AND kind IN ({', '.join('?' * len(kinds))})"
            args.extend(kinds)
        excluded = list(exclude_kinds)
        if excluded:
            sql += f" AND kind NOT IN ({', '.join('?' * len(excluded))})"
            args.extend(excluded)
        if since is not None:
            sql += " AND time >= ?"
            args.append(since)
        sql += " ORDER BY time, seq"
        return _stored_events(self.db.execute(sql, args), names)

    def events_after(self, seq: int, kinds: Iterable[str], limit: int) -> list[StoredEvent]:
        """Up to `limit` recorded events of `kinds` with a seq above `seq`, in the order they
        were recorded: how a plugin follows the history from a position it saved.

        `history` orders and bounds by time, and an event recorded in a catch-up carries its
        point's old time; a range on the primary key finds exactly what came after the
        position, without reading the whole history.
        """
        names = self.run_names()
        kinds = list(kinds)
        rows = self.db.execute(
            "SELECT seq, time, run_id, kind, severity, summary, data FROM events"
            f" WHERE seq > ? AND kind IN ({', '.join('?' * len(kinds))}) ORDER BY seq LIMIT ?",
            (seq, *kinds, limit),
        )
        return _stored_events(rows, names)

    def newest_point_seqs(self) -> dict[int, int]:
        """Run id -> seq of its newest recorded point: who has points after a saved position."""
        rows = self.db.execute("SELECT run_id, max(last_seq) FROM metric_chunks GROUP BY run_id")
        return {run_id: int(seq) for run_id, seq in rows}

    def plugin_values(self, plugin: str, prefix: str) -> dict[str, str]:
        """Key -> value of `plugin`'s state under the keys that start with `prefix` (not empty)."""
        # A key range, so the primary key's index finds them; UTF-8 sorts by code point.
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self.db.execute(
            "SELECT key, value FROM plugin_state WHERE plugin = ? AND key >= ? AND key < ?",
            (plugin, prefix, end),
        )
        return {str(key): str(value) for key, value in rows}


@dataclass
class _Rows:
    """Rows a group commit inserts, gathered so that each table takes one `executemany`."""

    chunks: list[tuple[object, ...]] = dataclasses.field(default_factory=list)
    latest_metrics: list[tuple[object, ...]] = dataclasses.field(default_factory=list)
    latest_steps: list[tuple[object, ...]] = dataclasses.field(default_factory=list)
    files: list[tuple[object, ...]] = dataclasses.field(default_factory=list)


_UPSERT_FILE = (
    "INSERT INTO files (key, run_id, source, dev, ino, fingerprint, offset, line_no,"
    " cursor, errors, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(key) DO UPDATE SET dev = excluded.dev, ino = excluded.ino,"
    " fingerprint = excluded.fingerprint, offset = excluded.offset,"
    " line_no = excluded.line_no, cursor = excluded.cursor, errors = excluded.errors,"
    " updated = excluded.updated"
)


def _file_row(s: FileState, now: float) -> tuple[object, ...]:
    return (
        s.key,
        s.run_id,
        s.source,
        s.dev,
        s.ino,
        s.fingerprint,
        s.offset,
        s.line_no,
        s.cursor,
        s.errors,
        now,
    )


def _raise_missing(path: Path) -> None:
    """Why there is no database at `path`: not created yet, or a directory that cannot be."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StateDirError(f"cannot use the state database {path}: {parent} is a file")
            break
    raise StoreError(f"{path}: no state database yet (has `tunewatch run` started?)")


def escape_event_text(event: ev.RunEvent) -> ev.RunEvent:
    """A copy of `event` whose text fields and metric names are valid UTF-8."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, str):
            changes[f.name] = storable_text(value)
        elif isinstance(value, Mapping):
            changes[f.name] = {storable_text(k): v for k, v in value.items()}
    return dataclasses.replace(event, **changes)


def _unrecordable(
    events: Sequence[ev.RunEvent], state: FileState | None, exc: Exception
) -> ev.SourceError:
    run = next((e.run for e in events), "?")
    source = state.source if state is not None else next((e.source for e in events), "?")
    location = state.key if state is not None else source
    return ev.SourceError(
        run=storable_text(run),
        source=storable_text(source),
        kind="unrecordable",
        message=f"{len(events)} event(s) could not be recorded: {type(exc).__name__}: "
        + ascii(str(exc))[:200],
        location=storable_text(location),
    )


class AsyncStore:
    """Runs a `Store`'s blocking calls on one dedicated thread, off the event loop."""

    def __init__(self, store: Store, executor: ThreadPoolExecutor) -> None:
        # The store's connection was opened on `executor`'s thread and is only used there.
        self.store = store
        self._executor = executor
        # Calls submitted and not yet returned: call number -> (name, monotonic submit time).
        self._pending: dict[int, tuple[str, float]] = {}
        self._calls = 0
        self._commits: list[tuple[Batch, asyncio.Future[Sequence[ev.RunEvent]]]] = []
        self._committer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, path: Path) -> AsyncStore:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunewatch-store")
        try:
            store = await asyncio.get_running_loop().run_in_executor(executor, Store, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    async def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        self._calls += 1
        number = self._calls
        self._pending[number] = (getattr(fn, "__name__", "call"), time.monotonic())
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        finally:
            del self._pending[number]

    async def commit(
        self, run_id: int, events: Sequence[ev.RunEvent], state: FileState | None
    ) -> Sequence[ev.RunEvent]:
        """`Store.commit_batch`, grouped: batches handed in while a commit is running go
        together in the next one (a group commit), each still atomic with its file position."""
        future: asyncio.Future[Sequence[ev.RunEvent]] = asyncio.get_running_loop().create_future()
        self._commits.append(((run_id, events, state), future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued(), name="store-commit")
        return await future

    async def _commit_queued(self) -> None:
        while self._commits:
            queued = self._commits[:MAX_GROUP_BATCHES]
            del self._commits[:MAX_GROUP_BATCHES]
            try:
                results = await self.call(self.store.commit_batches, [b for b, _f in queued])
            except BaseException as exc:  # every waiter hears of it
                for _batch, future in queued:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_batch, future), result in zip(queued, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, StoreFailure):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def oldest_pending(self) -> tuple[str, float] | None:
        """(name, seconds waiting) of the oldest call that has not returned, if any."""
        if not self._pending:
            return None
        name, submitted = next(iter(self._pending.values()))
        return name, time.monotonic() - submitted

    async def close(self) -> None:
        await self.call(self.store.close)
        self._executor.shutdown(wait=True)


def _stored_events(rows: Iterable[Any], names: Mapping[int, str]) -> list[StoredEvent]:
    """Rows of (seq, time, run_id, kind, severity, summary, data) as stored events."""
    return [
        StoredEvent(
            seq,
            HistoryRow(t, names.get(rid) if rid else None, kind, sev, summary, orjson.loads(d)),
        )
        for seq, t, rid, kind, sev, summary, d in rows
    ]
