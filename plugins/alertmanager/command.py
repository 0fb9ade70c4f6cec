"""`tunewatch alertmanager`: what tunewatch has told Alertmanager, and whether it got through.

Read from the saved state, so it works while the daemon runs (and after it stopped).
"""

from __future__ import annotations

import argparse
import time

import orjson

from tunewatch.daemon.history import fmt_duration
from tunewatch.daemon.plugin import CommandContext
from tunewatch.daemon.store import Store, StoreError
from tunewatch.daemon.text import printable
from tunewatch.plugins.alertmanager.book import AlertBook

EXIT_OK, EXIT_FAILED = 0, 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the saved state as JSON")


def run(ctx: CommandContext) -> int:
    config = ctx.config()
    if not config.active:
        print("Alertmanager is off: set [alertmanager] url in the config to send alerts.")
        return EXIT_OK
    try:
        store = Store(ctx.settings().state_db(), readonly=True)
    except StoreError as exc:
        print(f"cannot read tunewatch's state: {exc}")
        return EXIT_FAILED
    try:
        book_text = store.plugin_get("alertmanager", "book")
        delivery_text = store.plugin_get("alertmanager", "delivery")
    finally:
        store.close()
    book = AlertBook.from_json(book_text) if book_text else AlertBook()
    delivery = orjson.loads(delivery_text) if delivery_text else {}
    if ctx.args.json:
        print(
            orjson.dumps(
                {
                    "url": config.alerts_url,
                    "book": orjson.loads(book.to_json()),
                    "delivery": delivery,
                }
            ).decode()
        )
    else:
        print("\n".join(describe(config.alerts_url, book, delivery, time.time())))
    return EXIT_FAILED if delivery.get("down_since") else EXIT_OK


def describe(url: str, book: AlertBook, delivery: dict[str, object], now: float) -> list[str]:
    lines = [f"Alertmanager: {printable(url)}"]
    down_since = delivery.get("down_since")
    if isinstance(down_since, float | int):
        error = printable(str(delivery.get("last_error", "")))
        lines.append(
            f"  UNREACHABLE for {fmt_duration(now - down_since)} ({error}); "
            "alerts are kept and retried"
        )
    elif delivery.get("last_ok"):
        lines.append("  reachable: the alerts below were delivered")
    firing = [a for a in book.alerts.values() if a.firing]
    resolving = [a for a in book.alerts.values() if not a.firing and not a.one_off]
    one_offs = [a for a in book.alerts.values() if a.one_off]
    lines.append(
        f"  {len(firing)} firing, {len(resolving)} resolutions to deliver, {len(one_offs)} one-off"
    )
    for alert in sorted(book.alerts.values(), key=lambda a: a.starts_at):
        state = "firing" if alert.firing else "one-off" if alert.one_off else "resolved"
        name = alert.labels.get("alertname", "?")
        run = alert.labels.get("run", "")
        summary = alert.annotations.get("summary", "")
        lines.append(f"  {state:<8} {printable(name)} {printable(run)}: {printable(summary)}")
    return lines
