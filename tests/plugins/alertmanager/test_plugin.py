"""The plugin in a real store, bus and history recorder, sending to a real Alertmanager: alerts
fire and resolve, wait while Alertmanager is down, and survive a restart of tunewatch."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import Settings
from tunewatch.daemon.events import AnomalyDetected, AnomalyResolved, Event, RecordingFailed
from tunewatch.daemon.plugin import PluginContext
from tunewatch.daemon.recorder import HistoryRecorder
from tunewatch.daemon.store import AsyncStore, Store
from tunewatch.plugins.alertmanager import AlertmanagerConfig, AlertmanagerPlugin

from .servers import AlertmanagerServer, Notifications, nan_loss_labels

RUN = "run-a"


class Daemon:
    """The parts of the daemon the plugin lives in; plugins start and stop as in a restart."""

    def __init__(self, store: AsyncStore, bus: EventBus, url: str) -> None:
        self.store = store
        self.bus = bus
        self.url = url
        self.plugins: list[AlertmanagerPlugin] = []

    async def start_plugin(self, **config: Any) -> AlertmanagerPlugin:
        settings = {"url": self.url, "resend_s": 0.5, "retry_s": 0.2, "retry_max_s": 0.4}
        ctx = PluginContext(
            name="alertmanager",
            bus=self.bus,
            store=self.store,
            config=AlertmanagerConfig(**{**settings, **config}),
            settings=Settings(),
            log=structlog.get_logger("tunewatch.plugins.alertmanager"),
            run_dirs={RUN: Path("/runs/run-a")},
        )
        plugin = AlertmanagerPlugin(ctx)
        await plugin.start()
        self.plugins.append(plugin)
        return plugin

    def publish(self, *events: Event) -> None:
        self.bus.publish_many(events)

    async def stop_plugins(self) -> None:
        while self.plugins:
            await self.plugins.pop().stop()


@pytest.fixture
async def daemon(tmp_path: Path, alertmanager: AlertmanagerServer) -> AsyncIterator[Daemon]:
    store = await AsyncStore.open(tmp_path / "state.db")
    bus = EventBus()
    recorder = HistoryRecorder(store, bus)
    parts = Daemon(store, bus, alertmanager.url)
    yield parts
    await parts.stop_plugins()
    await recorder.close()
    await bus.close()
    await store.close()


async def until(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """Poll `check` (in a thread: it may block on HTTP) until truthy, without blocking the loop."""
    deadline = time.monotonic() + timeout_s
    while not (result := await asyncio.to_thread(check)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return result


def nan_loss(step: int = 40, when: float | None = None) -> AnomalyDetected:
    return AnomalyDetected(
        RUN, step, "non_finite", "critical", "loss", math.nan, None, "", time=when or time.time()
    )


def recovery(when: float | None = None) -> AnomalyResolved:
    return AnomalyResolved(RUN, 60, "non_finite", "loss", time=when or time.time())


async def test_a_pushed_anomaly_fires_and_its_recovery_resolves_it(
    daemon: Daemon, alertmanager: AlertmanagerServer, notifications: Notifications
) -> None:
    alertmanager.start()
    await daemon.start_plugin(labels=("cluster=gpu-a",))
    started = time.time()
    daemon.publish(nan_loss(when=started))
    alert = await until(lambda: alertmanager.alert(run=RUN), "the alert in Alertmanager")
    assert alert["status"]["state"] == "active"
    assert alert["labels"] == nan_loss_labels(RUN, "gpu-a")
    assert alert["annotations"] == {
        "summary": "NaN loss: run-a",
        "description": "Step 40: loss is NaN",
        "path": "/runs/run-a",
    }
    # Re-sent while active: Alertmanager sees it updated again.
    first_update = alert["updatedAt"]
    await until(
        lambda: (a := alertmanager.alert(run=RUN)) and a["updatedAt"] != first_update, "a re-send"
    )

    await until(lambda: notifications.alerts("firing"), "on-call told of the alert")
    recovered_at = time.time()
    daemon.publish(recovery(when=recovered_at))
    await until(lambda: alertmanager.alert(run=RUN) is None, "the alert to be resolved")
    resolved = await until(lambda: notifications.alerts("resolved"), "a resolved notification")
    # Resolved by tunewatch at the recovery, not expired for want of re-sends.
    assert resolved[0]["labels"]["alertname"] == "TunewatchNonFinite"
    assert resolved[0]["endsAt"].startswith(
        time.strftime("%Y-%m-%dT%H:%M", time.gmtime(recovered_at))
    )


async def test_news_goes_out_at_once_not_at_the_next_resend(
    daemon: Daemon, alertmanager: AlertmanagerServer, notifications: Notifications
) -> None:
    alertmanager.start()
    await daemon.start_plugin(resend_s=3600.0)
    await asyncio.sleep(0.5)  # its first (empty) turn is over
    daemon.publish(nan_loss())
    await until(lambda: alertmanager.alert(run=RUN), "the alert", timeout_s=5)
    await until(lambda: notifications.alerts("firing"), "on-call told of the alert")
    daemon.publish(recovery())
    await until(lambda: alertmanager.alert(run=RUN) is None, "the resolution", timeout_s=5)


async def test_a_finding_not_pushed_is_not_sent(
    daemon: Daemon, alertmanager: AlertmanagerServer
) -> None:
    alertmanager.start()
    plugin = await daemon.start_plugin()
    held = AnomalyDetected(RUN, 5, "zscore", "info", "grad_norm", 9.0, 1.0, "", push=False)
    daemon.publish(held, nan_loss())
    await until(lambda: alertmanager.alert(run=RUN), "the pushed alert")
    assert [a["labels"]["kind"] for a in await asyncio.to_thread(alertmanager.alerts)] == [
        "non_finite"
    ]
    assert plugin.book.firing() == 1


async def test_alerts_raised_while_alertmanager_is_down_arrive_once_it_is_up(
    daemon: Daemon, alertmanager: AlertmanagerServer
) -> None:
    with capture_logs() as logs:
        plugin = await daemon.start_plugin()
        daemon.publish(nan_loss())
        await until(lambda: plugin.delivery.failures >= 3, "a few failed tries")
        await asyncio.to_thread(alertmanager.start)
        await until(lambda: alertmanager.alert(run=RUN), "the queued alert")
    down = [e for e in logs if e["event"].startswith("Alertmanager unreachable")]
    assert len(down) == 1, "told once, not at every retry"
    assert down[0]["queued"] == 1
    assert any(e["event"].startswith("Alertmanager reachable again") for e in logs)


async def test_a_restart_keeps_the_alert_firing_and_delivers_a_resolution_made_while_down(
    daemon: Daemon, alertmanager: AlertmanagerServer, notifications: Notifications
) -> None:
    alertmanager.start()
    await daemon.start_plugin()
    daemon.publish(nan_loss())
    await until(lambda: notifications.alerts("firing"), "on-call told of the alert")
    await daemon.stop_plugins()

    # tunewatch restarted: the alert is still open, and re-sent.
    await daemon.start_plugin()
    before = (await asyncio.to_thread(alertmanager.alert, run=RUN) or {})["updatedAt"]
    await until(
        lambda: (a := alertmanager.alert(run=RUN)) and a["updatedAt"] != before, "a re-send"
    )
    await daemon.stop_plugins()

    # Recovered while the plugin was not running (recorded in the history all the same).
    await daemon.store.call(daemon.store.store.record, recovery())
    await daemon.start_plugin()
    await until(lambda: notifications.alerts("resolved"), "the resolution")
    assert await asyncio.to_thread(alertmanager.alert, run=RUN) is None


async def test_events_recorded_before_the_plugin_was_first_on_are_not_sent(
    daemon: Daemon, alertmanager: AlertmanagerServer
) -> None:
    await daemon.store.call(daemon.store.store.record, nan_loss())
    alertmanager.start()
    plugin = await daemon.start_plugin()
    await plugin.reconcile()
    assert plugin.book.alerts == {}


async def test_recording_stopped_is_sent_though_the_store_cannot_record_it(
    daemon: Daemon, alertmanager: AlertmanagerServer
) -> None:
    alertmanager.start()
    await daemon.start_plugin()
    daemon.publish(RecordingFailed("database or disk is full", since=time.time()))
    alert = await until(
        lambda: alertmanager.alert(alertname="TunewatchRecordingFailed"), "the alert"
    )
    assert alert["labels"]["severity"] == "critical"


async def test_a_recorded_row_it_cannot_read_is_skipped_counted_and_logged_once(
    daemon: Daemon, alertmanager: AlertmanagerServer
) -> None:
    alertmanager.start()
    plugin = await daemon.start_plugin()

    def odd_rows(store: Store) -> None:
        # As another version (or a third party) might have written them.
        seqs = store.record_many([nan_loss(step=1), nan_loss(step=2)])
        with store.db:
            store.db.executemany(
                "UPDATE events SET data = ? WHERE seq = ?",
                [('{"run": 7, "kind": ["x"], "push": true}', seq) for seq in seqs],
            )

    with capture_logs() as logs:
        await daemon.store.call(odd_rows, daemon.store.store)
        await daemon.store.call(daemon.store.store.record, nan_loss())
        daemon.publish(nan_loss())
        await until(lambda: alertmanager.alert(run=RUN), "the readable alert after them")
    assert plugin.bad_rows == 2
    assert len([e for e in logs if e["event"].startswith("recorded event not understood")]) == 1


async def test_without_a_url_nothing_runs(daemon: Daemon) -> None:
    plugin = await daemon.start_plugin(url="")
    assert plugin._task is None
    assert await daemon.store.call(daemon.store.store.plugin_get, "alertmanager", "book") is None
