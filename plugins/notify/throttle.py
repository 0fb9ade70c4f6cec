"""A global cap on notifications: at most N per window; the rest become one summary at its end.

Detectors already de-duplicate their own alerts; this guards the person against many runs or
many detectors firing at once. Nothing is silently dropped: every held alert is counted in the
summary, and a summary that holds a critical alert is critical itself. Pure: the caller passes
the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunewatch.plugins.alert_messages import Alert, plural

NAMED_IN_SUMMARY = 3


@dataclass
class _Window:
    end: float
    sent: int = 0
    held: list[Alert] = field(default_factory=list)


class Throttle:
    """Fixed windows of `window_s` seconds, each opened by the first alert after a quiet spell."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit  # 0: no cap
        self.window_s = window_s
        self._window: _Window | None = None

    def offer(self, alert: Alert, now: float) -> bool:
        """True: send `alert` now. False: it is held for the summary (see `due` and `flush_at`)."""
        if self.limit <= 0:
            return True
        window = self._window
        if window is None or (now >= window.end and not window.held):
            window = self._window = _Window(end=now + self.window_s)
        if window.sent < self.limit:
            window.sent += 1
            return True
        window.held.append(alert)
        return False

    def flush_at(self) -> float | None:
        """When the held alerts are due as a summary; None when nothing is held."""
        window = self._window
        return window.end if window is not None and window.held else None

    def due(self, now: float) -> Alert | None:
        """The summary of the held alerts once their window is over; it opens the next window."""
        window = self._window
        if window is None or not window.held or now < window.end:
            return None
        summary = summarise(window.held)
        self._window = _Window(end=now + self.window_s, sent=1)
        return summary

    def drain(self) -> Alert | None:
        """The summary of whatever is held, now (on shutdown: held alerts are still told)."""
        window = self._window
        if window is None or not window.held:
            return None
        summary = summarise(window.held)
        window.held = []
        return summary


def summarise(held: list[Alert]) -> Alert:
    """One alert standing for `held`: how many, how many critical, the first few by name."""
    critical = [a for a in held if a.critical]
    ordered = critical + [a for a in held if not a.critical]
    title = f"{plural(len(held), 'more alert')}"
    if critical:
        title += f" ({len(critical):,} critical)"
    names = "; ".join(a.title for a in ordered[:NAMED_IN_SUMMARY])
    rest = len(held) - NAMED_IN_SUMMARY
    if rest > 0:
        names += f"; and {rest:,} more"
    return Alert(
        title=title,
        body=f"{names}. See `tunewatch events`.",
        kind="collapsed",
        critical=bool(critical),
    )
