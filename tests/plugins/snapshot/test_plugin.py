"""The snapshot plugin on a real bus and store: each new best model gets a safe, verified copy."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from tunewatch.daemon.config import PathSettings
from tunewatch.plugins.snapshot import CONCURRENT_RUNS, SnapshotConfig
from tunewatch.plugins.snapshot.copy import copy_tree
from tunewatch.plugins.snapshot.manifest import MANIFEST_NAME, read_manifest
from tunewatch.plugins.snapshot.staging import start_staging

from .helpers import (
    LogEntries,
    StartPlugin,
    files_under,
    same_file,
    sha256_file,
    until,
    write_checkpoint,
)

FAST = SnapshotConfig(settle_s=0.2, wait_for_checkpoint_s=10.0)


def run_dir(tmp_path: Path, name: str = "run-a") -> Path:
    path = tmp_path / name
    path.mkdir()
    return path


@pytest.mark.parametrize("historical", [False, True], ids=["live", "read-at-start-up"])
async def test_the_checkpoint_of_a_new_best_is_snapshotted(
    tmp_path: Path, start_plugin: StartPlugin, historical: bool
) -> None:
    run = run_dir(tmp_path)
    source = write_checkpoint(run, 20)
    harness = await start_plugin({"run-a": run}, FAST)
    harness.best("run-a", 20, 1.234, historical=historical)
    (created,) = await harness.snapshots(1)
    snapshot = Path(created.path)
    assert (created.run, created.step, created.source_checkpoint) == ("run-a", 20, str(source))
    assert snapshot.parent == run / "snapshots"
    assert snapshot.name.startswith("run-a_step-000020_")
    assert files_under(snapshot) == files_under(source) | {MANIFEST_NAME}
    assert same_file(source / "model.safetensors", snapshot / "model.safetensors")
    manifest = read_manifest(snapshot)
    assert manifest is not None
    assert (manifest.run, manifest.step, manifest.metric, manifest.value) == (
        "run-a",
        20,
        "eval_loss",
        1.234,
    )
    assert {w.path: w.sha256 for w in manifest.weights}["model.safetensors"] == sha256_file(
        source / "model.safetensors"
    )


async def test_a_checkpoint_saved_after_the_best_was_logged_is_waited_for(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path)
    write_checkpoint(run, 10)
    harness = await start_plugin({"run-a": run}, FAST)
    harness.best("run-a", 20, 0.9)  # evaluation logged, checkpoint-20 not written yet
    await asyncio.sleep(0.5)
    assert harness.created == [] and harness.skips() == []
    source = write_checkpoint(run, 20)
    harness.saved("run-a", source, 20)
    (created,) = await harness.snapshots(1, within=5)
    assert created.source_checkpoint == str(source)


def append_for(path: Path, seconds: float) -> None:
    end = time.monotonic() + seconds
    with path.open("ab") as handle:
        while time.monotonic() < end:
            handle.write(os.urandom(8192))
            handle.flush()
            time.sleep(0.05)


async def test_a_checkpoint_still_being_written_is_copied_once_it_stops(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path)
    source = write_checkpoint(run, 30)
    weights = source / "model.safetensors"
    writer = threading.Thread(target=append_for, args=(weights, 1.5))
    writer.start()
    try:
        harness = await start_plugin({"run-a": run}, FAST)
        harness.best("run-a", 30, 0.5)
        (created,) = await harness.snapshots(1)
    finally:
        writer.join()
    stopped = weights.stat().st_mtime
    manifest = read_manifest(Path(created.path))
    assert manifest is not None and manifest.created >= stopped
    model = {w.path: w for w in manifest.weights}["model.safetensors"]
    assert model.size == weights.stat().st_size
    assert model.sha256 == sha256_file(weights)


async def test_a_best_at_a_step_that_was_never_saved_is_not_snapshotted(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path)
    write_checkpoint(run, 10)
    harness = await start_plugin({"run-a": run}, SnapshotConfig(wait_for_checkpoint_s=0.3))
    harness.best("run-a", 15, 0.7)
    (reason,) = await harness.skipped()
    assert "no checkpoint-15" in reason and "checkpoint-10" in reason and "gave up" in reason
    assert not (run / "snapshots").exists()
    assert harness.created == []


async def test_a_later_checkpoint_proves_the_step_was_skipped_without_waiting(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path)
    write_checkpoint(run, 10)
    write_checkpoint(run, 20)
    harness = await start_plugin({"run-a": run}, FAST)  # would wait 10 s for a missing step
    harness.best("run-a", 15, 0.7)
    (reason,) = await harness.skipped(within=2)
    assert "checkpoint-20" in reason and "not saved" in reason
    assert harness.created == []


async def test_a_best_from_history_without_its_checkpoint_is_not_waited_for(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    """Read at start-up, the trainer has moved on: a missing checkpoint will never come, and a
    finished run without it is nothing to warn about."""
    run = run_dir(tmp_path)
    write_checkpoint(run, 10)
    harness = await start_plugin({"run-a": run}, FAST)  # would wait 10 s for a live best
    harness.best("run-a", 15, 0.7, historical=True)
    (reason,) = await harness.skipped(within=2)
    assert "no checkpoint-15" in reason and "from history" in reason
    assert [e["log_level"] for e in harness.skips()] == ["debug"]
    assert harness.created == []


async def test_bests_of_many_runs_wait_in_one_queue_not_in_a_task_each(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    """Ten thousand runs read at start-up must not make ten thousand waiters: a few runs are
    handled at a time, and every best still gets its turn."""
    runs = {f"run-{n}": run_dir(tmp_path, f"run-{n}") for n in range(40)}
    harness = await start_plugin(runs, SnapshotConfig(wait_for_checkpoint_s=0.2))
    for name in runs:
        harness.best(name, 10, 0.5)
    await asyncio.sleep(0.1)
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("snapshot")]
    assert len(tasks) <= CONCURRENT_RUNS + 1  # the workers and the start-up cleanup
    await harness.skipped(len(runs))


async def test_a_live_best_does_not_wait_behind_the_bests_of_history(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    """Thousands of finished runs with checkpoints make a long backlog at start-up; a run
    training now may delete its checkpoint (save_total_limit) before that backlog is done."""
    runs = {f"old-{n}": run_dir(tmp_path, f"old-{n}") for n in range(3 * CONCURRENT_RUNS)}
    runs["live"] = run_dir(tmp_path, "live")
    for folder in runs.values():
        write_checkpoint(folder, 10)
    harness = await start_plugin(runs, SnapshotConfig(settle_s=0.3))
    for name in runs:
        harness.best(name, 10, 0.5, historical=name != "live")
    created = await harness.snapshots(len(runs))
    assert [c.run for c in created].index("live") <= 2 * CONCURRENT_RUNS


async def test_a_later_best_waits_for_the_snapshot_in_progress(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path)
    harness = await start_plugin({"run-a": run}, FAST)
    harness.best("run-a", 10, 0.9)
    harness.best("run-a", 20, 0.8)
    await asyncio.sleep(0.3)
    first = write_checkpoint(run, 10)
    harness.saved("run-a", first, 10)
    await asyncio.sleep(0.1)
    second = write_checkpoint(run, 20)
    harness.saved("run-a", second, 20)
    created = await harness.snapshots(2)
    assert [c.step for c in created] == [10, 20]
    assert [c.source_checkpoint for c in created] == [str(first), str(second)]


async def test_only_the_k_best_are_kept_and_a_users_folders_are_untouched(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path)
    snapshots = run / "snapshots"
    (snapshots / "notes").mkdir(parents=True)
    (snapshots / "notes" / "keep.txt").write_text("mine")
    (snapshots / ".tmp-mine").mkdir()
    harness = await start_plugin({"run-a": run}, SnapshotConfig(settle_s=0.1, keep_best=3))
    for n, value in enumerate([0.9, 0.8, 0.7, 0.6], start=1):
        write_checkpoint(run, n * 10)
        harness.best("run-a", n * 10, value)
    await harness.snapshots(4)
    await until(lambda: len([p for p in snapshots.iterdir() if p.name.startswith("run-a")]) == 3)
    kept = sorted(p.name[:17] for p in snapshots.iterdir() if p.name.startswith("run-a"))
    assert kept == ["run-a_step-000020", "run-a_step-000030", "run-a_step-000040"]
    assert (snapshots / "notes" / "keep.txt").read_text() == "mine"
    assert (snapshots / ".tmp-mine").is_dir()
    assert (run / "checkpoint-10" / "model.safetensors").exists()  # the trainer's own files


async def test_an_unfinished_snapshot_from_a_crash_is_removed_at_start(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path)
    snapshots = run / "snapshots"
    leftover = start_staging(snapshots, "run-a_step-000010_20260101-0000")
    copy_tree(write_checkpoint(run, 10), leftover, hardlink=True, should_stop=lambda: False)
    (snapshots / ".tmp-mine").mkdir()
    await start_plugin({"run-a": run}, FAST)
    await until(lambda: not leftover.exists(), within=5)
    assert (snapshots / ".tmp-mine").is_dir()


async def test_the_same_best_twice_is_snapshotted_once(
    tmp_path: Path, start_plugin: StartPlugin, captured_logs: LogEntries
) -> None:
    run = run_dir(tmp_path)
    write_checkpoint(run, 10)
    harness = await start_plugin({"run-a": run}, FAST)
    harness.best("run-a", 10, 0.9)
    await harness.snapshots(1)
    harness.best("run-a", 10, 0.9)  # e.g. replayed after a restart
    await until(lambda: any(e["event"] == "step already snapshotted" for e in captured_logs))
    assert len(harness.created) == 1
    assert len(list((run / "snapshots").iterdir())) == 1


async def test_a_path_named_by_the_event_is_used(tmp_path: Path, start_plugin: StartPlugin) -> None:
    run = run_dir(tmp_path)
    write_checkpoint(run, 40)
    best = tmp_path / "exported-best"
    best.mkdir()
    (best / "adapter_model.safetensors").write_bytes(b"lora" * 100)
    harness = await start_plugin({"run-a": run}, FAST)
    harness.best("run-a", 40, 0.3, checkpoint=str(best))
    (created,) = await harness.snapshots(1)
    assert created.source_checkpoint == str(best)
    assert files_under(Path(created.path)) == {"adapter_model.safetensors", MANIFEST_NAME}


async def test_model_dir_is_copied_not_linked_for_trainers_without_checkpoints(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path)
    latest = run / "latest"
    latest.mkdir()
    (latest / "model.safetensors").write_bytes(b"w" * 1000)
    shared = tmp_path / "all-snapshots"
    harness = await start_plugin(
        {"run-a": run},
        SnapshotConfig(settle_s=0.1, model_dir="latest"),
        PathSettings(snapshots=str(shared)),
    )
    harness.best("run-a", 500, 2.5, metric="loss")
    (created,) = await harness.snapshots(1)
    snapshot = Path(created.path)
    assert snapshot.parent == shared
    assert not same_file(latest / "model.safetensors", snapshot / "model.safetensors")
    # The trainer overwrites its latest weights in place: the snapshot must not change.
    (latest / "model.safetensors").write_bytes(b"x" * 1000)
    assert (snapshot / "model.safetensors").read_bytes() == b"w" * 1000


async def test_a_run_unknown_at_start_is_found_in_the_store(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path, "late-run")
    write_checkpoint(run, 10)
    harness = await start_plugin({}, FAST)
    store = harness.plugin.ctx.store
    await store.call(store.store.ensure_run, str(run), "late-run")
    harness.best("late-run", 10, 0.5)
    (created,) = await harness.snapshots(1)
    assert Path(created.path).parent == run / "snapshots"


async def test_a_new_snapshot_worse_than_those_kept_is_removed_and_not_announced(
    tmp_path: Path, start_plugin: StartPlugin, captured_logs: LogEntries
) -> None:
    # E.g. a run restarted from scratch under the same name, after a better earlier attempt.
    run = run_dir(tmp_path)
    write_checkpoint(run, 10)
    write_checkpoint(run, 20)
    harness = await start_plugin({"run-a": run}, SnapshotConfig(settle_s=0.1, keep_best=1))
    harness.best("run-a", 10, 0.5)
    await harness.snapshots(1)
    harness.best("run-a", 20, 0.9)
    await until(lambda: any("not among the best kept" in e["event"] for e in captured_logs))
    assert [c.step for c in harness.created] == [10]
    (kept,) = (run / "snapshots").iterdir()
    assert kept.name.startswith("run-a_step-000010_")


async def test_a_model_dir_holding_the_snapshots_folder_is_refused(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    run = run_dir(tmp_path)
    (run / "model.safetensors").write_bytes(b"w")
    harness = await start_plugin({"run-a": run}, SnapshotConfig(settle_s=0.1, model_dir="."))
    harness.best("run-a", 5, 1.0)
    (reason,) = await harness.skipped()
    assert "snapshots folder" in reason and "is inside" in reason
    assert not (run / "snapshots").exists()
    assert harness.created == []


@pytest.mark.slow
async def test_a_real_trainer_run_is_snapshotted_while_it_trains(
    tmp_path: Path, start_plugin: StartPlugin
) -> None:
    from fixtures.tiny_training import train_tiny_run
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

    run = run_dir(tmp_path, "tiny")
    harness = await start_plugin({"tiny": run}, SnapshotConfig(settle_s=0.5, keep_best=0))
    loop = asyncio.get_running_loop()
    published: list[int] = []

    class PublishBest(TrainerCallback):
        """Publishes a best at evaluation time: before the Trainer saves that step."""

        best = float("inf")

        def on_evaluate(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            metrics: dict[str, float] | None = None,
            **kwargs: object,
        ) -> None:
            value = (metrics or {}).get("eval_loss", float("inf"))
            if value >= self.best:
                return
            self.best = value
            step = state.global_step
            assert not (run / f"checkpoint-{step}").exists()
            published.append(step)
            loop.call_soon_threadsafe(harness.best, "tiny", step, value)

    await asyncio.to_thread(train_tiny_run, run, callbacks=[PublishBest()])
    assert published
    created = await harness.snapshots(len(published), within=60)
    assert [c.step for c in created] == published
    for event in created:
        source = run / f"checkpoint-{event.step}"
        manifest = read_manifest(Path(event.path))
        assert manifest is not None
        assert set(manifest.files) == files_under(source)
        hashes = {w.path: w.sha256 for w in manifest.weights}
        assert {"model.safetensors", "optimizer.pt"} <= set(hashes)
        for name, digest in hashes.items():
            assert digest == sha256_file(source / name), name
