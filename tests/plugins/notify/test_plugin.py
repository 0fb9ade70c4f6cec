"""The notify plugin end to end: events on a real bus become notifications on a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import html
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.events import (
    AnomalyDetected,
    BestModelFound,
    Severity,
    SnapshotCreated,
    ValidationFinished,
)
from tunewatch.daemon.plugin import PluginContext
from tunewatch.plugins.notify import NotifyConfig, NotifyPlugin

from .conftest import Closer, NotificationServer, Webhook, eventually

MakeContext = Callable[..., PluginContext]
StartPlugin = Callable[..., Awaitable[NotifyPlugin]]


def divergence(run: str = "run-a", severity: Severity = "critical") -> AnomalyDetected:
    return AnomalyDetected(
        run=run,
        step=18_500,
        kind="divergence",
        severity=severity,
        metric="loss",
        value=1.2345,
        expected=0.7429,
        detail="best 0.7429 at step 17,213",
    )


def best(step: int = 17_213) -> BestModelFound:
    return BestModelFound(run="run-a", step=step, metric="eval_loss", value=0.7429, checkpoint=None)


@pytest.fixture
def start_plugin(make_context: MakeContext, closing: list[Closer]) -> StartPlugin:
    """Starts the plugin (stopped at teardown, whatever the test did)."""

    async def start(*, notifications: bool = True, **config: Any) -> NotifyPlugin:
        plugin = NotifyPlugin(make_context(NotifyConfig(**config), notifications=notifications))
        closing.append(plugin.stop)
        await plugin.start()
        return plugin

    return start


def alerts_logged(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, str, str]]:
    return [(e["log_level"], e["title"], e["body"]) for e in logs if e["event"] == "alert"]


async def test_a_divergence_pops_up_as_a_critical_notification_and_is_logged(
    notification_server: NotificationServer, start_plugin: StartPlugin, event_bus: EventBus
) -> None:
    with capture_logs() as logs:
        plugin = await start_plugin()
        event_bus.publish(divergence())
        (received,) = await asyncio.to_thread(notification_server.received, 1)
        await plugin.stop()
    assert received.summary == "Training diverged: run-a"
    assert received.body == "Step 18,500: loss 1.2345 (best 0.7429 at step 17,213)"
    assert received.urgency == "CRITICAL"
    assert received.appname == "tunewatch"
    assert alerts_logged(logs) == [
        ("warning", "Training diverged: run-a", received.body),
    ]


async def test_names_with_markup_are_shown_literally(
    notification_server: NotificationServer, start_plugin: StartPlugin, event_bus: EventBus
) -> None:
    name = "<b>x</b> & <img src=y>"
    plugin = await start_plugin()
    event_bus.publish(
        AnomalyDetected(
            run=name,
            step=7,
            kind="stall",
            severity="critical",
            metric="",
            value=0.0,
            expected=None,
            detail=f"No new metric in {name} for 35 min",
        )
    )
    (received,) = await asyncio.to_thread(notification_server.received, 1)
    await plugin.stop()
    assert received.summary == f"Training stalled: {name}"
    assert "<" not in received.body
    assert html.unescape(received.body) == f"No new metric in {name} for 35 min"


async def test_a_best_model_waits_for_its_snapshot_and_a_click_opens_it(
    notification_server: NotificationServer,
    start_plugin: StartPlugin,
    event_bus: EventBus,
    xdg_open_log: Path,
    tmp_path: Path,
) -> None:
    snapshot = tmp_path / "snapshots" / "best-17213"
    plugin = await start_plugin(best_wait_s=30)
    event_bus.publish(best())
    await asyncio.sleep(0.2)
    event_bus.publish(SnapshotCreated(run="run-a", step=1, path="/elsewhere", source_checkpoint=""))
    event_bus.publish(
        SnapshotCreated(run="run-a", step=17_213, path=str(snapshot), source_checkpoint="ckpt")
    )
    await asyncio.to_thread(notification_server.wait_for, 1)
    await asyncio.to_thread(notification_server.dunstctl, "action", "0")
    await eventually(xdg_open_log.exists)
    (received,) = await asyncio.to_thread(notification_server.received, 1)
    await plugin.stop()
    assert received.summary == "New best model: run-a"
    assert received.body == "Step 17,213: eval loss 0.7429 · snapshot saved"
    assert received.urgency == "NORMAL"
    assert await asyncio.to_thread(xdg_open_log.read_text) == f"{snapshot}\n"


async def test_a_snapshot_announced_before_its_best_model_still_counts(
    notification_server: NotificationServer, start_plugin: StartPlugin, event_bus: EventBus
) -> None:
    plugin = await start_plugin(best_wait_s=30)
    event_bus.publish(SnapshotCreated(run="run-a", step=5, path="/s/5", source_checkpoint="c"))
    await asyncio.sleep(0.1)
    event_bus.publish(best(step=5))
    (received,) = await asyncio.to_thread(notification_server.received, 1)
    await plugin.stop()
    assert received.body == "Step 5: eval loss 0.7429 · snapshot saved"


async def test_a_best_model_without_a_snapshot_is_told_after_best_wait_s(
    notification_server: NotificationServer, start_plugin: StartPlugin, event_bus: EventBus
) -> None:
    plugin = await start_plugin(best_wait_s=0.2)
    event_bus.publish(best())
    (received,) = await asyncio.to_thread(notification_server.received, 1)
    await asyncio.sleep(0.3)
    assert notification_server.count() == 1
    await plugin.stop()
    assert received.body == "Step 17,213: eval loss 0.7429"


async def test_stopping_tells_a_best_model_still_waiting_for_its_snapshot(
    notification_server: NotificationServer, start_plugin: StartPlugin, event_bus: EventBus
) -> None:
    plugin = await start_plugin(best_wait_s=3600)
    event_bus.publish(best())
    await asyncio.sleep(0.2)  # the best model is waiting; nothing is shown yet
    assert notification_server.count() == 0
    await plugin.stop()
    (received,) = await asyncio.to_thread(notification_server.received, 1)
    assert received.summary == "New best model: run-a"


async def test_a_best_model_from_history_is_not_told(
    start_plugin: StartPlugin, event_bus: EventBus, webhook: Webhook
) -> None:
    """Bests found in what start-up read (ten thousand finished runs) are in `tunewatch events`:
    old news, neither pushed nor logged as alerts, not even when stopping."""
    with capture_logs() as logs:
        plugin = await start_plugin(desktop=False, remote_urls=(webhook.url,), best_wait_s=3600)
        event_bus.publish(dataclasses.replace(best(), historical=True))
        await asyncio.sleep(0.3)
        await plugin.stop()
    assert alerts_logged(logs) == []
    assert webhook.received == []


async def test_a_burst_is_capped_and_the_rest_summarised_with_their_criticals_counted(
    notification_server: NotificationServer, start_plugin: StartPlugin, event_bus: EventBus
) -> None:
    plugin = await start_plugin(max_per_window=2, window_s=0.5)
    for run in ("run-1", "run-2", "run-3", "run-4"):
        event_bus.publish(divergence(run, severity="normal"))
    event_bus.publish(divergence("run-5"))
    received = await asyncio.to_thread(notification_server.received, 3)
    await asyncio.sleep(0.6)
    assert notification_server.count() == 3
    await plugin.stop()
    assert [r.summary for r in received] == [
        "Training diverged: run-1",
        "Training diverged: run-2",
        "3 more alerts (1 critical)",
    ]
    assert received[2].urgency == "CRITICAL"
    assert received[2].body.startswith("Training diverged: run-5; Training diverged: run-3")


async def test_a_failed_data_check_is_critical(
    notification_server: NotificationServer, start_plugin: StartPlugin, event_bus: EventBus
) -> None:
    plugin = await start_plugin()
    event_bus.publish(
        ValidationFinished(
            run="run-a",
            path="/r/inbox/my_data.jsonl",
            score=12,
            verdict="failed",
            errors=150,
            warnings=0,
            report_path=None,
        )
    )
    (received,) = await asyncio.to_thread(notification_server.received, 1)
    await plugin.stop()
    assert (received.summary, received.body, received.urgency) == (
        "Data check failed: my_data.jsonl",
        "FAILED: 150 errors (score 12/100)",
        "CRITICAL",
    )


async def test_no_notifications_sends_nothing_anywhere_but_still_logs(
    notification_server: NotificationServer,
    start_plugin: StartPlugin,
    event_bus: EventBus,
    webhook: Webhook,
) -> None:
    with capture_logs() as logs:
        plugin = await start_plugin(remote_urls=(webhook.url,), notifications=False)
        event_bus.publish(divergence())
        await eventually(lambda: bool(alerts_logged(logs)))
        await asyncio.sleep(0.5)
        await plugin.stop()
    assert alerts_logged(logs) == [
        (
            "warning",
            "Training diverged: run-a",
            "Step 18,500: loss 1.2345 (best 0.7429 at step 17,213)",
        )
    ]
    assert notification_server.count() == 0
    assert webhook.received == []


async def test_enabled_false_turns_the_plugin_off(
    notification_server: NotificationServer, start_plugin: StartPlugin, event_bus: EventBus
) -> None:
    with capture_logs() as logs:
        plugin = await start_plugin(enabled=False)
        event_bus.publish(divergence())
        await asyncio.sleep(0.3)
        await plugin.stop()
    assert [s.name for s in event_bus.stats() if s.name.startswith("notify")] == []
    assert logs == []
    assert notification_server.count() == 0


async def test_a_headless_server_still_gets_alerts_through_remote_channels(
    start_plugin: StartPlugin,
    event_bus: EventBus,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    with capture_logs() as logs:
        plugin = await start_plugin(remote_urls=(webhook.url,))
        event_bus.publish(divergence())
        await eventually(lambda: bool(webhook.received))
        await plugin.stop()
    assert [(m["title"], m["type"]) for m in webhook.received] == [
        ("Training diverged: run-a", "failure")
    ]
    (warning,) = [e for e in logs if e["log_level"] == "warning" and e["event"] != "alert"]
    assert "desktop notifications unavailable" in warning["event"]
