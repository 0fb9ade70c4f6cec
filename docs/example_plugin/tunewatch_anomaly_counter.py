"""An example tunewatch plugin, complete: it counts the anomalies of each run as they happen, and
adds `tunewatch anomaly-counts`, which prints them from the recorded history.

Install it next to tunewatch (`pip install docs/example_plugin`) and it is found through its
entry point; the test suite installs and runs it (tests/test_example_plugin.py).
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from tunewatch.daemon.events import AnomalyDetected
from tunewatch.daemon.plugin import CommandContext, CommandRegistry, PluginContext


@dataclass(frozen=True, slots=True)
class CounterConfig:
    """The [anomaly_counter] section of config.toml."""

    enabled: bool = True
    critical_only: bool = False  # count only critical anomalies


class AnomalyCounter:
    name: ClassVar[str] = "anomaly_counter"
    Config: ClassVar[type[CounterConfig]] = CounterConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: CounterConfig = ctx.config
        self.counts: Counter[str] = Counter()
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        if self.config.enabled:
            self._unsubscribe = self.ctx.bus.subscribe(AnomalyDetected, self.on_anomaly)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def on_anomaly(self, event: AnomalyDetected) -> None:
        if self.config.critical_only and event.severity != "critical":
            return
        self.counts[event.run] += 1
        self.ctx.log.info("anomaly counted", run=event.run, total=self.counts[event.run])

    @classmethod
    def register_commands(cls, commands: CommandRegistry) -> None:
        commands.add(
            "anomaly-counts",
            help="how many anomalies each run had",
            add_arguments=_arguments,
            run=_print_counts,
        )


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", help="only this run")


def _print_counts(ctx: CommandContext) -> int:
    from tunewatch.daemon.store import Store

    config: CounterConfig = ctx.config()
    store = Store(ctx.settings().state_db(), readonly=True)
    try:
        rows = store.history(run=ctx.args.run, kinds=["anomaly"])
    finally:
        store.close()
    counts = Counter(
        stored.row.run or "-"
        for stored in rows
        if not config.critical_only or stored.row.severity == "critical"
    )
    for run, count in sorted(counts.items()):
        print(f"{run}\t{count}")
    return 0
