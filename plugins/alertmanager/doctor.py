"""What `tunewatch doctor` checks for Alertmanager: its secret can be read, and it takes a
request (an empty list of alerts: nothing is created, but the address and the login are
proven)."""

from __future__ import annotations

import asyncio

from tunewatch.daemon.doctor import CheckResult
from tunewatch.plugins.alertmanager.client import DeliveryError, Endpoint, post_json
from tunewatch.plugins.alertmanager.config import AlertmanagerConfig
from tunewatch.plugins.alertmanager.secrets import read_authorization

NAME = "alertmanager"


def checks(config: AlertmanagerConfig) -> list[CheckResult]:
    if not config.active:
        return [CheckResult(NAME, "ok", "off (no [alertmanager] url)")]
    try:
        authorization = read_authorization(config)
    except RuntimeError as exc:
        return [CheckResult(NAME, "error", str(exc), "fix the file, or the key in the config")]
    endpoint = Endpoint.parse(config.alerts_url)
    try:
        asyncio.run(
            post_json(endpoint, b"[]", authorization=authorization, timeout_s=config.timeout_s)
        )
    except DeliveryError as exc:
        return [
            CheckResult(
                NAME,
                "error",
                f"{config.alerts_url}: {exc}",
                "check [alertmanager] url and that Alertmanager runs and is reachable from "
                "here; alerts are kept and retried meanwhile",
            )
        ]
    return [CheckResult(NAME, "ok", f"{config.alerts_url} takes alerts")]
