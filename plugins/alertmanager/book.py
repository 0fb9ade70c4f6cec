"""The alerts Alertmanager must hear about: the open ones, and the resolutions not delivered yet.

Saved in the store with the history cursor in one value, so after a crash the plugin knows both
what it had told and from which recorded event to go on: an event is applied exactly once, and
a resolved alert can only be opened again by a later event, never by a stale re-send.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from tunewatch.plugins.alertmanager.mapping import Change

# Alerts kept at most; past it the oldest resolutions waiting for delivery are dropped (counted):
# an Alertmanager down for weeks must not grow the daemon without bound.
MAX_ALERTS = 5000
# An open alert is sent with endsAt this many re-send intervals ahead (as Prometheus does): if
# tunewatch stops re-sending it, Alertmanager resolves it by itself rather than keep it forever.
VALID_FOR_RESENDS = 4


@dataclass(frozen=True, slots=True)
class TrackedAlert:
    key: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: float
    ends_at: float | None = None  # None: firing; set: resolved (a one-off: when it ends)
    one_off: bool = False

    @property
    def firing(self) -> bool:
        return self.ends_at is None


class AlertBook:
    """Applies changes read from the history and says what to send."""

    def __init__(self, cursor: int = 0, alerts: dict[str, TrackedAlert] | None = None) -> None:
        self.cursor = cursor  # seq of the last recorded event applied
        self.alerts: dict[str, TrackedAlert] = dict(alerts or {})
        self.dropped = 0  # resolutions dropped undelivered (MAX_ALERTS)

    def apply(self, change: Change, *, now: float, one_off_s: float) -> bool:
        """Apply one change; whether the book changed."""
        current = self.alerts.get(change.key)
        if change.action == "resolve":
            if current is None or not current.firing:
                return False  # not open here (opened before the plugin was on, or resolved)
            self.alerts[change.key] = replace(current, ends_at=max(change.time, current.starts_at))
            return True
        assert change.spec is not None
        if change.action == "one_off":
            ends_at = change.time + one_off_s
            if current is not None or ends_at <= now:
                return False  # already sent, or old news read while catching up
            self._add(TrackedAlert(change.key, *_texts(change), change.time, ends_at, True))
            return True
        if current is not None and current.firing:
            return False  # the same episode: its start stays the first one
        self._add(TrackedAlert(change.key, *_texts(change), change.time))
        return True

    def _add(self, alert: TrackedAlert) -> None:
        self.alerts[alert.key] = alert
        if len(self.alerts) <= MAX_ALERTS:
            return
        resolved = sorted(
            (a for a in self.alerts.values() if not a.firing), key=lambda a: a.ends_at or 0.0
        )
        for old in resolved[: len(self.alerts) - MAX_ALERTS]:
            del self.alerts[old.key]
            self.dropped += 1

    def firing(self) -> int:
        return sum(1 for a in self.alerts.values() if a.firing)

    def prune(self, now: float) -> bool:
        """Forget one-offs that are over (Alertmanager resolves them by their endsAt)."""
        over = [k for k, a in self.alerts.items() if a.one_off and (a.ends_at or 0.0) <= now]
        for key in over:
            del self.alerts[key]
        return bool(over)

    def outbox(self) -> dict[str, TrackedAlert]:
        """What to send now: every alert in the book (the caller prunes first)."""
        return dict(self.alerts)

    def delivered(self, sent: dict[str, TrackedAlert]) -> bool:
        """Alertmanager accepted `sent`: forget the resolutions in it, unless the alert changed
        since (opened again by a later event)."""
        done = [
            key
            for key, alert in sent.items()
            if not alert.firing and not alert.one_off and self.alerts.get(key) is alert
        ]
        for key in done:
            del self.alerts[key]
        return bool(done)

    # -- persistence ----------------------------------------------------------------------------

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "cursor": self.cursor,
                "alerts": [
                    {
                        "key": a.key,
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "starts_at": a.starts_at,
                        "ends_at": a.ends_at,
                        "one_off": a.one_off,
                    }
                    for a in self.alerts.values()
                ],
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> AlertBook:
        data: dict[str, Any] = orjson.loads(text)
        alerts = {a["key"]: TrackedAlert(**a) for a in data["alerts"]}
        return cls(int(data["cursor"]), alerts)


def alert_json(
    alert: TrackedAlert,
    *,
    now: float,
    resend_s: float,
    common_labels: dict[str, str],
    generator_url: str,
) -> dict[str, Any]:
    """One alert as Alertmanager's API v2 (POST /api/v2/alerts) takes it."""
    ends_at = alert.ends_at if alert.ends_at is not None else now + VALID_FOR_RESENDS * resend_s
    body: dict[str, Any] = {
        "labels": {**common_labels, **alert.labels},
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(ends_at),
    }
    if generator_url:
        body["generatorURL"] = generator_url
    return body


def rfc3339(when: float) -> str:
    return (
        datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _texts(change: Change) -> tuple[dict[str, str], dict[str, str]]:
    assert change.spec is not None
    return change.spec.labels, change.spec.annotations
