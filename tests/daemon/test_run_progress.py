"""When a run counts as finished: its status says so, it reached its total, or it logged the
end-of-training summary; and training again when a finished run goes on from an earlier step."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from pathlib import Path

from tunewatch.daemon.events import MetricsBatch, MetricsLogged, RunEvent, StatusChanged
from tunewatch.daemon.run_progress import follow, implied_status
from tunewatch.daemon.sources.run_sources import RunSources


def run() -> RunSources:
    return RunSources(run_id=1, name="run-a", path=Path("/runs/run-a"))


def point(step: int, **metrics: float) -> MetricsLogged:
    return MetricsLogged("run-a", step, metrics or {"loss": 1.0}, "trainer_log.jsonl")


def finished(r: RunSources) -> bool:
    return r.finished


def progress(r: RunSources, events: Sequence[RunEvent], live: bool = False) -> str | None:
    """Feed events as the ingest does; the implied status, if any."""
    implied = implied_status(r, events, live=live)
    follow(r, [*events, *([implied] if implied else [])], live=live)
    return implied.status if implied else None


def test_an_hf_run_that_logged_its_summary_is_finished_at_once() -> None:
    """The last log_history entry of a completed Trainer run (its train_loss is the average)."""
    r = run()
    summary = point(5000, train_runtime=3600.0, train_loss=0.9, total_flos=1e15)
    assert progress(r, [point(4990), summary]) == "finished"
    assert finished(r)
    assert progress(r, [point(5000)]) is None  # said once


def test_a_log_that_reaches_its_total_steps_is_finished() -> None:
    r = run()
    lines = [point(s, loss=1.0, total_steps=100.0) for s in (98, 99)]
    assert progress(r, lines) is None
    assert progress(r, [point(100, loss=0.9, total_steps=100.0)]) == "finished"


def test_the_total_may_come_from_a_status_and_the_end_from_a_batch() -> None:
    r = run()
    assert progress(r, [StatusChanged("run-a", "training", "s", step=0, total_steps=64)]) is None
    batch = MetricsBatch(
        "run-a",
        "log.jsonl",
        array("q", range(1, 65)),
        array("d", [1.0] * 64),
        {"loss": array("d", [1.0] * 64)},
    )
    assert progress(r, [batch]) == "finished"


def test_a_trainer_status_of_its_own_is_not_repeated() -> None:
    r = run()
    done = StatusChanged("run-a", "completed", "training_status.json", step=10, total_steps=10)
    assert progress(r, [done, point(10)]) is None
    assert finished(r)


def test_a_finished_run_that_goes_on_live_from_an_earlier_step_trains_again() -> None:
    r = run()
    progress(r, [point(100, total_steps=100.0)])
    assert finished(r)
    assert progress(r, [point(60, total_steps=100.0)], live=False) is None  # history: no news
    assert progress(r, [point(61, total_steps=100.0)], live=True) == "training"
    assert not finished(r)
    assert progress(r, [point(100, total_steps=100.0)], live=True) == "finished"


def test_without_a_total_or_a_summary_nothing_is_implied() -> None:
    r = run()
    assert progress(r, [point(s) for s in range(1, 500)]) is None
    assert not finished(r)
