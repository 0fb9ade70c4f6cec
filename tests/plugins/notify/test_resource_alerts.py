"""Resource alerts through the notify plugin: pushed only when `push`, critical when critical."""

from __future__ import annotations

from collections.abc import Callable

from structlog.testing import capture_logs

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.events import ResourceAlert, ResourceRecovered
from tunewatch.daemon.plugin import PluginContext
from tunewatch.plugins.notify import NotifyConfig, NotifyPlugin


async def test_resource_alerts_are_told_only_when_pushed(
    make_context: Callable[..., PluginContext], event_bus: EventBus
) -> None:
    plugin = NotifyPlugin(make_context(NotifyConfig(), notifications=False))
    await plugin.start()
    with capture_logs() as logs:
        event_bus.publish_many(
            [
                ResourceAlert("disk", "critical", "/data fills in 40 min", "rm -r x", path="/data"),
                ResourceAlert("disk", "critical", "/data fills again", "", path="/d", push=False),
                ResourceRecovered("disk", "/data is fine again", path="/d", push=False),
                ResourceRecovered("disk", "Disk space (/data) is fine again", path="/data"),
            ]
        )
        await event_bus.drain()
    await plugin.stop()
    told = [(e["log_level"], e["title"], e["body"]) for e in logs if e["event"] == "alert"]
    assert told == [
        ("warning", "Disk filling: /data", "/data fills in 40 min. rm -r x"),
        ("info", "Recovered: Disk filling: /data", "Disk space (/data) is fine again"),
    ]
