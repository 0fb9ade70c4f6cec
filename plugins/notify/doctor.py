"""What `tunewatch doctor` checks for notifications: a session bus with a notification server
for desktop alerts, else remote channels, so that someone is told."""

from __future__ import annotations

import asyncio
from typing import Any

from tunewatch.daemon.doctor import CheckResult
from tunewatch.plugins.notify.desktop import DesktopUnavailable, probe_server

PROBE_TIMEOUT_S = 3.0


def checks(config: Any) -> list[CheckResult]:
    name = "notifications"
    if not config.enabled:
        return [CheckResult(name, "ok", "off ([notify] enabled = false): alerts go to the log")]
    remote = f"{len(config.remote_urls)} remote channel(s)" if config.remote_urls else ""
    if not config.desktop:
        if remote:
            return [CheckResult(name, "ok", f"desktop off; {remote}")]
        return [_nobody(name, "desktop off ([notify] desktop = false) and no remote channel")]
    try:
        capabilities = asyncio.run(probe_server(PROBE_TIMEOUT_S))
    except DesktopUnavailable as exc:
        if remote:
            return [CheckResult(name, "ok", f"no desktop ({exc}); {remote}")]
        return [_nobody(name, f"no desktop: {exc}; no remote channel")]
    actions = "clickable" if "actions" in capabilities else "not clickable"
    detail = f"notification server on the session bus ({actions})"
    return [CheckResult(name, "ok", detail + (f"; {remote}" if remote else ""))]


def _nobody(name: str, why: str) -> CheckResult:
    return CheckResult(
        name,
        "warning",
        why + ": alerts reach the log and `tunewatch events` only",
        "on a headless server, add a remote channel: [notify] remote_urls = "
        '["ntfy://ntfy.sh/your-topic"] (any Apprise URL: Slack, email, ...)',
    )
