"""Fixtures: the snapshot plugin started on a real bus and a real store, with captured logs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import PathSettings, Settings
from tunewatch.daemon.events import SnapshotCreated
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.store import AsyncStore
from tunewatch.plugins.snapshot import SnapshotConfig, SnapshotPlugin

from .helpers import Harness, LogEntries, StartPlugin


@pytest.fixture
def captured_logs() -> Iterator[LogEntries]:
    with capture_logs() as logs:
        yield logs


@pytest.fixture
async def start_plugin(tmp_path: Path, captured_logs: LogEntries) -> AsyncIterator[StartPlugin]:
    """Start the plugin with a config and run dirs; everything is stopped after the test."""
    store = await AsyncStore.open(tmp_path / "state.db")
    started: list[Harness] = []

    async def start(
        run_dirs: dict[str, Path],
        config: SnapshotConfig | None = None,
        paths: PathSettings | None = None,
    ) -> Harness:
        bus = EventBus()
        ctx = PluginContext(
            name="snapshot",
            bus=bus,
            store=store,
            config=config or SnapshotConfig(settle_s=0.2, wait_for_checkpoint_s=10.0),
            settings=Settings(paths=paths or PathSettings()),
            log=structlog.get_logger("test.snapshot"),
            run_dirs=run_dirs,
        )
        harness = Harness(bus, SnapshotPlugin(ctx), captured_logs)
        bus.subscribe(SnapshotCreated, harness.created.append)
        await harness.plugin.start()
        started.append(harness)
        return harness

    yield start
    for harness in started:
        await harness.plugin.stop()
        await harness.bus.close()
    await store.close()
