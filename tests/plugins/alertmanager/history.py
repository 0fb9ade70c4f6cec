"""Events as the plugin reads them: recorded in a real store, read back from its history."""

from __future__ import annotations

from typing import Any

from tunewatch.daemon.events import Event
from tunewatch.daemon.store import Store
from tunewatch.plugins.alertmanager import recorded_after
from tunewatch.plugins.alertmanager.mapping import HISTORY_KINDS


def record_and_read(store: Store, *events: Event) -> list[tuple[int, str, dict[str, Any]]]:
    """Record `events` in the history; the rows of them the plugin reads, oldest first."""
    cursor = store.last_seq()
    store.record_many(list(events))
    return recorded_after(store, cursor, HISTORY_KINDS, 10_000)
