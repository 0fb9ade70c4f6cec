"""Thins old metric points in the background, so months of runs keep the state database small.

The rule is `[daemon] downsample_after_days` and `downsample_keep_every` (see config.toml and
`PackedChunk.thinned`). It only touches points tunewatch stored itself, never a user's file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from tunewatch.daemon.config import DaemonSettings
from tunewatch.daemon.store import AsyncStore

log = structlog.get_logger(__name__)

INTERVAL_S = 3600.0
CHUNKS_PER_TRANSACTION = 100  # ~100k points: a short pause for the ingest between transactions
_DAY_S = 86_400.0


async def downsample_once(store: AsyncStore, settings: DaemonSettings) -> int:
    """Thin every chunk that is old enough now; returns how many were thinned."""
    if settings.downsample_after_days <= 0:
        return 0
    older_than = time.time() - settings.downsample_after_days * _DAY_S
    total = 0
    while True:
        done = await store.call(
            store.store.downsample,
            older_than,
            settings.downsample_keep_every,
            CHUNKS_PER_TRANSACTION,
        )
        total += done
        if done < CHUNKS_PER_TRANSACTION:
            break
        await asyncio.sleep(0)  # let queued ingest commits go first
    if total:
        log.info(
            "old metric points thinned",
            chunks=total,
            older_than_days=settings.downsample_after_days,
        )
    return total


async def run_downsampling(store: AsyncStore, settings: Callable[[], DaemonSettings]) -> None:
    """Thin old points now, then once an hour, until cancelled (`settings` follows reloads)."""
    while True:
        await downsample_once(store, settings())
        await asyncio.sleep(INTERVAL_S)
