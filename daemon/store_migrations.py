"""Upgrades of the state database from older tunewatch versions, each in one transaction."""

from __future__ import annotations

import sqlite3

import orjson

from tunewatch.daemon.events import MetricsLogged
from tunewatch.daemon.latest import LATEST_SCHEMA, Latest
from tunewatch.daemon.metric_chunks import INSERT_SQL, chunk_rows, pack_points, unpack


def migrate_from_v1(db: sqlite3.Connection, schema: str) -> None:
    """Version 1 kept each chunk as a JSON array of points; repack them as columns (version 2).

    Runs also gain the step and source of their status. `schema` is the current schema script;
    it creates the new table. Either the whole upgrade commits or nothing changes, so a crash
    half-way leaves a version 1 database to retry.
    """
    db.executescript(
        "BEGIN IMMEDIATE;"
        " ALTER TABLE runs ADD COLUMN status_step INTEGER;"
        " ALTER TABLE runs ADD COLUMN status_source TEXT;"
        " DROP INDEX IF EXISTS chunks_by_run;"
        " ALTER TABLE metric_chunks RENAME TO metric_chunks_v1;" + schema
    )
    try:
        old = db.execute(
            "SELECT run_id, source, points FROM metric_chunks_v1 ORDER BY first_seq"
        ).fetchall()
        for run_id, source, text in old:
            chunks = [pack_points(points) for points in _consecutive(_v1_points(source, text))]
            db.executemany(INSERT_SQL, chunk_rows(run_id, chunks))
        db.execute("DROP TABLE metric_chunks_v1")
        db.execute("PRAGMA user_version = 2")
        db.commit()
    except BaseException:
        db.rollback()
        raise


def _v1_points(source: str, text: str) -> list[MetricsLogged]:
    # Version 1 wrote a non-finite value as its repr ("nan", "inf") since JSON has no NaN.
    return [
        MetricsLogged(
            "",
            step,
            {k: float(v) if isinstance(v, str) else v for k, v in m.items()},
            source,
            t,
            seq,
        )
        for seq, step, t, m in orjson.loads(text)
    ]


def _consecutive(points: list[MetricsLogged]) -> list[list[MetricsLogged]]:
    """Split where seqs jump: a version 2 chunk holds consecutive seqs only."""
    runs: list[list[MetricsLogged]] = []
    for point in points:
        if runs and runs[-1][-1].seq == point.seq - 1:
            runs[-1].append(point)
        else:
            runs.append([point])
    return runs


def migrate_from_v2(db: sqlite3.Connection) -> None:
    """Version 3 adds the newest value per metric and point per source (see daemon/latest.py);
    they are filled from the stored points, in one transaction."""
    db.executescript(LATEST_SCHEMA)  # idempotent: a crash before the commit below retries
    db.execute("BEGIN IMMEDIATE")
    try:
        latest: dict[int, Latest] = {}
        rows = db.execute(
            "SELECT run_id, source, first_seq, names, data, seqs FROM metric_chunks"
            " ORDER BY first_seq"
        )
        for run_id, *row in rows:
            chunk = unpack(*row)
            for seq, step, t, values in chunk.points():
                latest.setdefault(run_id, Latest()).add_point(chunk.source, seq, step, t, values)
        for run_id, found in latest.items():
            found.save(db, run_id)
        db.execute("PRAGMA user_version = 3")
        db.commit()
    except BaseException:
        db.rollback()
        raise
