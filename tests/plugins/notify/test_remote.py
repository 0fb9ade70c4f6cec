"""Remote channels through Apprise, against real local HTTP endpoints (json:// webhooks)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from tunewatch.plugins.alert_messages import Alert
from tunewatch.plugins.notify.remote import RemoteChannels

from .conftest import Closer, Webhook, eventually


@pytest.fixture
def dead_url() -> str:
    """A port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"json://127.0.0.1:{port}/"


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A port that accepts connections and never answers (Apprise itself gives up after 0.5 s)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"json://127.0.0.1:{sock.getsockname()[1]}/?cto=0.5&rto=0.5"


Remote = Callable[..., RemoteChannels]


@pytest.fixture
def remote(closing: list[Closer]) -> Remote:
    """Starts channels to `urls` (closed at teardown, whatever the test did)."""

    def start(*urls: str, timeout_s: float = 5.0) -> RemoteChannels:
        channels = RemoteChannels(urls, structlog.get_logger("test"), timeout_s=timeout_s)
        closing.append(channels.close)
        channels.start()
        return channels

    return start


async def test_alerts_arrive_as_plain_text_with_their_kind(
    webhook: Webhook, remote: Remote
) -> None:
    channels = remote(webhook.url)
    channels.submit(
        Alert("Training diverged: <b>run</b>", "Step 3: loss & more", "anomaly", critical=True)
    )
    channels.submit(Alert("New best model: run-a", "Step 5: loss 0.5000", "best_model"))
    channels.submit(Alert("Training report ready", "Last 24 h", "report"))
    await eventually(lambda: len(webhook.received) == 3)
    await channels.close()
    assert [(m["title"], m["message"], m["type"]) for m in webhook.received] == [
        ("Training diverged: <b>run</b>", "Step 3: loss & more", "failure"),
        ("New best model: run-a", "Step 5: loss 0.5000", "success"),
        ("Training report ready", "Last 24 h", "info"),
    ]


async def test_dead_and_hanging_channels_never_hold_back_a_working_one(
    webhook: Webhook, dead_url: str, hanging_url: str, remote: Remote
) -> None:
    with capture_logs() as logs:
        channels = remote(dead_url, hanging_url, webhook.url, timeout_s=0.3)
        for i in range(3):
            channels.submit(Alert(f"alert {i}", "b", "anomaly"))
        await eventually(lambda: len(webhook.received) == 3, timeout_s=2.0)
        await eventually(lambda: all(c.failed >= 1 for c in channels.channels[:2]))
        await channels.close(grace_s=0.1)
    assert [m["title"] for m in webhook.received] == ["alert 0", "alert 1", "alert 2"]
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 2, "each failing channel is reported once, not once per alert"
    reasons = {w["reason"] for w in warnings}
    assert "no answer within 0.3 s" in reasons
    assert "the service refused or could not be reached" in reasons


async def test_a_channel_that_recovers_says_so(webhook: Webhook, remote: Remote) -> None:
    webhook.status = 500
    with capture_logs() as logs:
        channels = remote(webhook.url)
        channels.submit(Alert("lost", "b", "anomaly"))
        await eventually(lambda: channels.channels[0].failed == 1)
        webhook.status = 200
        channels.submit(Alert("delivered", "b", "anomaly"))
        await eventually(lambda: len(webhook.received) == 1)
        await channels.close()
    assert webhook.received[0]["title"] == "delivered"
    assert [e["event"] for e in logs if e["log_level"] in ("warning", "info")] == [
        "remote channel failed; further failures are not logged until it works again",
        "remote channel works again",
    ]


async def test_a_malformed_url_is_reported_and_skipped(webhook: Webhook, remote: Remote) -> None:
    with capture_logs() as logs:
        channels = remote("nonsense://secret-token@x", webhook.url)
        channels.submit(Alert("still delivered", "b", "anomaly"))
        await eventually(lambda: len(webhook.received) == 1)
        await channels.close()
    (error,) = [e for e in logs if e["log_level"] == "error"]
    assert error["entry"] == 1 and error["scheme"] == "nonsense"
    assert "secret-token" not in repr(error), "a URL's secrets never reach the log"


def test_apprise_is_not_loaded_unless_remote_urls_are_configured() -> None:
    probe = (
        "import sys, tunewatch.plugins.notify as n; "
        "assert n.NotifyConfig().remote_urls == (); "
        "print('apprise' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
