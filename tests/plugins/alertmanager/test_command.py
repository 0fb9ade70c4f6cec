"""`tunewatch alertmanager`: an outage and every alert in the book, readable at a glance."""

from __future__ import annotations

from tunewatch.plugins.alertmanager.book import AlertBook
from tunewatch.plugins.alertmanager.command import describe
from tunewatch.plugins.alertmanager.mapping import AlertSpec, Change

URL = "http://am:9093/api/v2/alerts"


def book_with_one_firing_and_one_resolved() -> AlertBook:
    book = AlertBook()
    for key, run in (("a", "run-a"), ("b", "run-\x1b[31mb")):
        spec = AlertSpec(
            labels={"alertname": "TunewatchNonFinite", "run": run},
            annotations={"summary": f"NaN loss: {run}"},
        )
        book.apply(Change("open", key, 100.0, spec), now=100.0, one_off_s=60.0)
    book.apply(Change("resolve", "b", 160.0), now=160.0, one_off_s=60.0)
    return book


def test_an_outage_is_shown_with_its_length_and_reason() -> None:
    delivery = {"down_since": 1000.0, "last_error": "Connect call failed", "failures": 4}
    lines = describe(URL, book_with_one_firing_and_one_resolved(), delivery, now=1600.0)
    assert lines[0] == f"Alertmanager: {URL}"
    assert lines[1].startswith("  UNREACHABLE for 10 min")
    assert "Connect call failed" in lines[1]
    assert lines[2] == "  1 firing, 1 resolutions to deliver, 0 one-off"


def test_each_alert_is_one_line_with_terminal_escapes_made_visible() -> None:
    lines = describe(URL, book_with_one_firing_and_one_resolved(), {"last_ok": 5.0}, now=10.0)
    assert lines[1] == "  reachable: the alerts below were delivered"
    assert lines[3] == "  firing   TunewatchNonFinite run-a: NaN loss: run-a"
    assert lines[4].startswith("  resolved TunewatchNonFinite run-\\x1b[31mb")
