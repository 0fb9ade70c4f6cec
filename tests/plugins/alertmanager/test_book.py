"""The saved book of alerts: an episode is one alert, a resolution is kept until delivered, and a
resolved alert is only opened again by a later event."""

from __future__ import annotations

import orjson

from tunewatch.plugins.alertmanager.book import (
    MAX_ALERTS,
    VALID_FOR_RESENDS,
    AlertBook,
    alert_json,
    rfc3339,
)
from tunewatch.plugins.alertmanager.mapping import AlertSpec, Change

SPEC = AlertSpec(
    labels={"alertname": "TunewatchNonFinite", "run": "run-a", "kind": "non_finite"},
    annotations={"summary": "NaN loss: run-a", "description": "Step 3: loss is NaN"},
)
NOW = 1_700_000_000.0


def opened(key: str = "k", when: float = NOW) -> Change:
    return Change("open", key, when, SPEC)


def resolved(key: str = "k", when: float = NOW + 60) -> Change:
    return Change("resolve", key, when)


def apply(book: AlertBook, *changes: Change, now: float = NOW) -> list[bool]:
    return [book.apply(c, now=now, one_off_s=3600.0) for c in changes]


def test_an_episode_seen_again_keeps_its_first_start() -> None:
    book = AlertBook()
    assert apply(book, opened(when=NOW), opened(when=NOW + 30)) == [True, False]
    assert book.alerts["k"].starts_at == NOW
    assert book.firing() == 1


def test_a_resolution_sets_ends_at_and_is_kept_until_alertmanager_took_it() -> None:
    book = AlertBook()
    apply(book, opened(), resolved(when=NOW + 60))
    alert = book.alerts["k"]
    assert alert.ends_at == NOW + 60 and not alert.firing
    assert book.delivered(book.outbox())
    assert book.alerts == {}


def test_a_resend_in_flight_while_the_alert_resolved_does_not_forget_the_resolution() -> None:
    book = AlertBook()
    apply(book, opened())
    in_flight = book.outbox()  # the firing alert, being sent
    apply(book, resolved())
    assert not book.delivered(in_flight)
    assert book.alerts["k"].ends_at == NOW + 60  # still to be told


def test_a_delivered_resolution_is_not_undone_by_the_same_episode_reopened_later() -> None:
    """Only a later event opens it again (a new episode), with its own start."""
    book = AlertBook()
    apply(book, opened(), resolved())
    sent = book.outbox()
    apply(book, opened(when=NOW + 120))
    assert not book.delivered(sent)  # the new episode is not forgotten with the old resolution
    assert book.alerts["k"].firing and book.alerts["k"].starts_at == NOW + 120


def test_resolving_what_is_not_open_changes_nothing() -> None:
    book = AlertBook()
    assert apply(book, resolved()) == [False]
    apply(book, opened(), resolved())
    assert apply(book, resolved(when=NOW + 999)) == [False]
    assert book.alerts["k"].ends_at == NOW + 60


def test_a_resolution_never_ends_before_the_alert_started() -> None:
    book = AlertBook()
    apply(book, opened(when=NOW), resolved(when=NOW - 5))
    assert book.alerts["k"].ends_at == NOW


def test_a_one_off_fires_for_its_span_and_old_ones_are_not_sent() -> None:
    book = AlertBook()
    one_off = Change("one_off", "failed", NOW, SPEC)
    assert apply(book, one_off, now=NOW + 10) == [True]
    assert book.alerts["failed"].ends_at == NOW + 3600
    assert apply(book, one_off, now=NOW + 20) == [False]  # sent once, not again
    assert not book.prune(NOW + 3599)
    assert book.prune(NOW + 3600)
    stale = Change("one_off", "old", NOW - 7200, SPEC)  # read while catching up: old news
    assert apply(book, stale, now=NOW) == [False]


def test_the_book_and_its_cursor_survive_a_round_trip_through_the_store() -> None:
    book = AlertBook(cursor=41)
    apply(book, opened("a"), opened("b"), resolved("b"))
    again = AlertBook.from_json(book.to_json())
    assert again.cursor == 41
    assert again.alerts == book.alerts


def test_past_its_bound_the_oldest_undelivered_resolutions_go_first() -> None:
    book = AlertBook()
    apply(book, opened("firing"))
    for i in range(MAX_ALERTS + 10):
        apply(book, opened(f"r{i}", NOW + i), resolved(f"r{i}", NOW + i + 1))
    assert len(book.alerts) == MAX_ALERTS
    assert "firing" in book.alerts and "r0" not in book.alerts
    assert book.dropped == 11


def test_the_api_json_of_a_firing_and_a_resolved_alert() -> None:
    book = AlertBook()
    apply(book, opened("a"), opened("b"), resolved("b"))
    common = {"host": "gpu-1", "cluster": "a"}
    firing = alert_json(
        book.alerts["a"], now=NOW + 5, resend_s=60.0, common_labels=common, generator_url=""
    )
    assert firing == {
        "labels": {**common, **SPEC.labels},
        "annotations": SPEC.annotations,
        "startsAt": "2023-11-14T22:13:20.000Z",
        # Valid for a few re-sends: if tunewatch stops, Alertmanager resolves it by itself.
        "endsAt": rfc3339(NOW + 5 + VALID_FOR_RESENDS * 60.0),
    }
    done = alert_json(
        book.alerts["b"], now=NOW, resend_s=60.0, common_labels=common, generator_url="http://g"
    )
    assert done["endsAt"] == "2023-11-14T22:14:20.000Z"
    assert done["generatorURL"] == "http://g"
    assert orjson.loads(orjson.dumps(done)) == done
