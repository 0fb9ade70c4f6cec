"""Whether Alertmanager takes our alerts, and when to try again: exponential backoff, and a
failure that is told once (when it starts) and once more when it is over."""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass
class DeliveryState:
    retry_s: float
    retry_max_s: float
    failures: int = 0  # consecutive
    down_since: float | None = None  # unix time of the first failure of this outage
    last_error: str = ""
    last_ok: float | None = None

    @property
    def ok(self) -> bool:
        return self.failures == 0

    def failed(self, error: str, now: float) -> bool:
        """Count a failure; True for the first of an outage (the one to log)."""
        self.failures += 1
        self.last_error = error
        if self.down_since is None:
            self.down_since = now
            return True
        return False

    def succeeded(self, now: float) -> None:
        self.failures = 0
        self.down_since = None
        self.last_error = ""
        self.last_ok = now

    def down_for(self, now: float) -> float | None:
        """Seconds since the outage began; None when there is none."""
        return None if self.down_since is None else now - self.down_since

    def next_delay(self, resend_s: float) -> float:
        """After a success, the re-send interval; after failures, `retry_s` doubled each time up
        to `retry_max_s`, so that a struggling Alertmanager is not hammered."""
        if self.ok:
            return resend_s
        return min(self.retry_s * 2.0 ** (self.failures - 1), self.retry_max_s)

    def resume(self, saved: str) -> None:
        """Go on from the state a previous run of the daemon saved: an outage that began before
        a restart is the same outage (told once, and its end told with its whole length)."""
        data = orjson.loads(saved)
        self.down_since = data.get("down_since")
        self.last_error = data.get("last_error") or ""
        self.last_ok = data.get("last_ok")
        self.failures = int(data.get("failures") or 0)

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "failures": self.failures,
                "down_since": self.down_since,
                "last_error": self.last_error,
                "last_ok": self.last_ok,
            }
        ).decode()
