"""The report of a real Trainer run that diverged (learning rate x1000 at step 35, no clipping),
recorded by a real daemon: the true final step, loss and divergence, and the way back."""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path

import pytest
from fixtures.daemon_process import DaemonProcess
from markdown_it import MarkdownIt

from tunewatch.daemon.events import ValidationFinished
from tunewatch.daemon.store import Store
from tunewatch.plugins.report.generate import generate_report

from .test_chart_process import PNG_SIGNATURE

BLOW_UP_STEP = 35


@pytest.mark.slow
def test_the_report_of_a_diverged_run_says_where_to_roll_back_to(tmp_path: Path) -> None:
    from fixtures.tiny_training import LrBlowUpCallback, train_tiny_run

    since = time.time() - 1
    run = tmp_path / "blow-up"
    result = train_tiny_run(
        run,
        max_steps=60,
        save_steps=10,
        eval_steps=10,
        max_grad_norm=0.0,
        callbacks=[LrBlowUpCallback(at_step=BLOW_UP_STEP, factor=1000.0)],
    )
    config = tmp_path / "config.toml"
    config.write_text("[snapshot]\nsettle_s = 0.1\n")
    with DaemonProcess(tmp_path) as daemon:
        daemon.start(str(run), config=config)
        daemon.wait_for(
            lambda: (
                0
                < len(daemon.events("--kind", "best_model"))
                == len(daemon.events("--kind", "snapshot"))
            ),
            timeout_s=60,
            what="a snapshot of every best model",
        )
        assert daemon.stop() == 0
    # A data file validated in the period, as the inbox plugin records it.
    store = Store(daemon.db)
    store.record(
        ValidationFinished(
            "blow-up",
            str(run / "inbox" / "next.jsonl"),
            62,
            "fix",
            4,
            2,
            str(run / "reports" / "validation" / "next.jsonl.md"),
        )
    )
    store.close()
    written = generate_report(
        daemon.db,
        tmp_path / "reports",
        since=since,
        until=time.time() + 1,
        stamp=dt.datetime.now(),
    )
    report = written.report

    (summary,) = report.runs
    logged = [e for e in result.log_history if "loss" in e and "train_runtime" not in e]
    assert summary.step == result.global_step == 60
    assert summary.progress_text == "60 / 60 steps (100.0 %)"
    assert math.isclose(summary.loss or 0.0, logged[-1]["loss"], rel_tol=1e-9)
    evals = [e for e in result.log_history if "eval_loss" in e]
    assert math.isclose(summary.eval_loss or 0.0, evals[-1]["eval_loss"], rel_tol=1e-9)
    divergence = [a for a in report.anomalies.alerts if a.kind == "divergence"]
    assert divergence and divergence[0].step >= BLOW_UP_STEP
    assert summary.diverged_at_step == divergence[0].step
    assert written.health.startswith(f"1 run: 1 diverged at step {divergence[0].step}")
    # The bests came before the blow-up, each with its snapshot; roll back to the last of them.
    assert report.anomalies.best_models
    assert all(b.step < BLOW_UP_STEP and b.snapshot for b in report.anomalies.best_models)
    last_good = max(report.anomalies.best_models, key=lambda b: b.step)
    rollback = next(r for r in report.recommendations if r.title.startswith("Roll "))
    assert rollback.title == f"Roll blow-up back to {last_good.snapshot}"
    assert f"snapshot of step {last_good.step} was taken before" in rollback.detail
    assert "lower learning rate" in rollback.detail
    (validation,) = report.activity.validations
    assert (validation.score, validation.passed) == (62, False)
    assert any(r.title.startswith("Fix the data") for r in report.recommendations)
    # The checkpoints of the run, measured; the newest and the best are marked.
    (measured,) = report.resources.storage
    assert [c.step for c in measured.checkpoints] == [10, 20, 30, 40, 50, 60]
    assert [c.step for c in measured.checkpoints if c.newest or c.best] == [last_good.step, 60]
    # The Markdown's image is the chart that was written.
    tokens = MarkdownIt("commonmark").enable("table").parse(written.latest.read_text())
    (image,) = [c for t in tokens for c in t.children or [] if c.type == "image"]
    assert (written.latest.parent / str(image.attrGet("src"))).read_bytes()[:8] == PNG_SIGNATURE
