"""Specification of the Hugging Face `trainer_state.json` parser, checkpoints and cursor."""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunewatch.daemon.events import (
    CheckpointSaved,
    MetricsLogged,
    RunEvent,
    SourceError,
    StatusChanged,
)
from tunewatch.daemon.sources.base import FileOrigin, IncompleteDocument
from tunewatch.daemon.sources.hf_trainer import TrainerStateParser
from tunewatch.daemon.sources.metric_names import MAX_SANE_STEP

OUTPUT_DIR = "/runs/qwen-lora"


def parser_for(relative: str) -> TrainerStateParser:
    return TrainerStateParser(
        FileOrigin(run="qwen-lora", source="trainer_state.json", path=f"{OUTPUT_DIR}/{relative}")
    )


def train_entry(step: int, loss: float = 1.0) -> dict[str, Any]:
    return {
        "epoch": step / 100,
        "grad_norm": 0.9,
        "learning_rate": 2e-5,
        "loss": loss,
        "step": step,
    }


def eval_entry(step: int) -> dict[str, Any]:
    return {
        "epoch": step / 100,
        "eval_loss": 1.5,
        "eval_runtime": 3.2,
        "eval_samples_per_second": 40.0,
        "step": step,
    }


def trainer_state(history: list[Any], global_step: int, **extra: Any) -> bytes:
    """A trainer_state.json as the Trainer writes it (json.dumps, indent=2, sorted keys)."""
    state = {
        "best_metric": None,
        "best_model_checkpoint": None,
        "epoch": global_step / 100,
        "global_step": global_step,
        "log_history": history,
        "max_steps": 30,
        "num_train_epochs": 1,
        "total_flos": 1.2e15,
        **extra,
    }
    return json.dumps(state, indent=2, sort_keys=True).encode()


HISTORY_10 = [train_entry(5), train_entry(10), eval_entry(10)]
HISTORY_20 = [*HISTORY_10, train_entry(15), train_entry(20), eval_entry(20)]
SUMMARY = {"epoch": 0.3, "step": 30, "total_flos": 1.2e15, "train_loss": 1.1, "train_runtime": 60.0}
HISTORY_FINAL = [*HISTORY_20, train_entry(25), train_entry(30), eval_entry(30), SUMMARY]

CHECKPOINT_10 = trainer_state(HISTORY_10, 10)
CHECKPOINT_20 = trainer_state(
    HISTORY_20,
    20,
    best_metric=1.5,
    best_model_checkpoint=f"{OUTPUT_DIR}/checkpoint-10",
)
FINAL = trainer_state(HISTORY_FINAL, 30)


def metrics_events(events: list[RunEvent]) -> list[MetricsLogged]:
    return [e for e in events if isinstance(e, MetricsLogged)]


def test_the_first_checkpoint_emits_progress_every_entry_and_the_checkpoint() -> None:
    events, _ = parser_for("checkpoint-10/trainer_state.json").parse(CHECKPOINT_10, None)
    status, *logged, checkpoint = events
    assert isinstance(status, StatusChanged)
    assert status == StatusChanged(
        "qwen-lora", "training", "trainer_state.json", step=10, total_steps=30, time=status.time
    )
    assert [(e.step, e.metrics) for e in metrics_events(logged)] == [
        (5, {"epoch": 0.05, "grad_norm": 0.9, "learning_rate": 2e-5, "loss": 1.0}),
        (10, {"epoch": 0.1, "grad_norm": 0.9, "learning_rate": 2e-5, "loss": 1.0}),
        (
            10,
            {
                "epoch": 0.1,
                "eval_loss": 1.5,
                "eval_runtime": 3.2,
                "eval_samples_per_second": 40.0,
            },
        ),
    ]
    assert isinstance(checkpoint, CheckpointSaved)
    assert (checkpoint.step, checkpoint.path) == (10, f"{OUTPUT_DIR}/checkpoint-10")
    assert (checkpoint.best_metric, checkpoint.best_checkpoint) == (None, None)


def test_each_entry_is_emitted_exactly_once_across_checkpoints() -> None:
    events_10, cursor = parser_for("checkpoint-10/trainer_state.json").parse(CHECKPOINT_10, None)
    events_20, cursor = parser_for("checkpoint-20/trainer_state.json").parse(CHECKPOINT_20, cursor)
    logged = metrics_events(events_10) + metrics_events(events_20)
    assert [e.step for e in logged] == [5, 10, 10, 15, 20, 20]
    assert not any(isinstance(e, StatusChanged) for e in events_20)  # max_steps is unchanged
    [checkpoint] = [e for e in events_20 if isinstance(e, CheckpointSaved)]
    assert checkpoint.step == 20
    assert checkpoint.path == f"{OUTPUT_DIR}/checkpoint-20"
    assert checkpoint.best_metric == 1.5
    assert checkpoint.best_checkpoint == f"{OUTPUT_DIR}/checkpoint-10"


def test_the_same_checkpoint_parsed_again_emits_nothing() -> None:
    parser = parser_for("checkpoint-20/trainer_state.json")
    _, cursor = parser.parse(CHECKPOINT_20, None)
    events, again = parser.parse(CHECKPOINT_20, cursor)
    assert events == []
    assert again == cursor


def test_an_older_checkpoint_after_a_newer_one_emits_nothing() -> None:
    _, cursor = parser_for("checkpoint-20/trainer_state.json").parse(CHECKPOINT_20, None)
    events, _ = parser_for("checkpoint-10/trainer_state.json").parse(CHECKPOINT_10, cursor)
    assert events == []


def test_the_final_state_in_the_output_dir_adds_its_entries_but_is_no_checkpoint() -> None:
    _, cursor = parser_for("checkpoint-20/trainer_state.json").parse(CHECKPOINT_20, None)
    events, cursor = parser_for("trainer_state.json").parse(FINAL, cursor)
    assert [e.step for e in metrics_events(events)] == [25, 30, 30, 30]
    # The summary's train_loss is the run's average, not a point of the loss curve.
    assert metrics_events(events)[-1].metrics == {
        "epoch": 0.3,
        "total_flos": 1.2e15,
        "train_loss": 1.1,
        "train_runtime": 60.0,
    }
    assert not any(isinstance(e, CheckpointSaved) for e in events)
    # The last checkpoint, written at the same moment, is still announced.
    events, _ = parser_for("checkpoint-30/trainer_state.json").parse(FINAL, cursor)
    assert [(type(e).__name__, getattr(e, "step", None)) for e in events] == [
        ("CheckpointSaved", 30)
    ]


def test_an_eval_entry_added_at_an_already_emitted_step_is_emitted() -> None:
    parser = parser_for("trainer_state.json")
    events, cursor = parser.parse(trainer_state([train_entry(5), train_entry(10)], 10), None)
    assert [e.step for e in metrics_events(events)] == [5, 10]
    events, _ = parser.parse(trainer_state([*HISTORY_10, train_entry(15)], 15), cursor)
    assert [(e.step, "eval_loss" in e.metrics) for e in metrics_events(events)] == [
        (10, True),
        (15, False),
    ]


def test_entries_repeating_the_same_keys_at_one_step_are_each_emitted_once() -> None:
    parser = parser_for("trainer_state.json")
    first = eval_entry(10)
    second = {**eval_entry(10), "eval_loss": 1.4}
    _, cursor = parser.parse(trainer_state([first], 10), None)
    events, cursor = parser.parse(trainer_state([first, second], 10), cursor)
    assert [e.metrics["eval_loss"] for e in metrics_events(events)] == [1.4]
    events, _ = parser.parse(trainer_state([first, second], 10), cursor)
    assert events == []


def test_a_nan_loss_written_by_json_dumps_is_kept() -> None:
    document = trainer_state([train_entry(5, loss=math.nan)], 5)
    assert b"NaN" in document
    events, _ = parser_for("trainer_state.json").parse(document, None)
    [logged] = metrics_events(events)
    assert math.isnan(logged.metrics["loss"])


def test_a_changed_max_steps_reports_the_new_total() -> None:
    parser = parser_for("trainer_state.json")
    _, cursor = parser.parse(trainer_state([], 0), None)
    events, _ = parser.parse(trainer_state([], 0, max_steps=60), cursor)
    assert [(type(e).__name__, getattr(e, "total_steps", None)) for e in events] == [
        ("StatusChanged", 60)
    ]


def test_the_cursor_survives_a_restart_as_a_plain_string() -> None:
    _, cursor = parser_for("checkpoint-10/trainer_state.json").parse(CHECKPOINT_10, None)
    assert isinstance(cursor, str)
    restored = str(cursor)  # as the store would give it back
    events, _ = parser_for("checkpoint-20/trainer_state.json").parse(CHECKPOINT_20, restored)
    assert [e.step for e in metrics_events(events)] == [15, 20, 20]


@pytest.mark.parametrize("cut", [0, 1, len(CHECKPOINT_20) // 2, len(CHECKPOINT_20) - 1])
def test_a_half_written_document_is_incomplete_not_an_error(cut: int) -> None:
    with pytest.raises(IncompleteDocument):
        parser_for("checkpoint-20/trainer_state.json").parse(CHECKPOINT_20[:cut], None)


@given(st.data())
def test_every_truncation_of_a_document_is_incomplete(data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(CHECKPOINT_20) - 1))
    with pytest.raises(IncompleteDocument):
        parser_for("checkpoint-20/trainer_state.json").parse(CHECKPOINT_20[:cut], "cursor")


@pytest.mark.parametrize(
    ("document", "found"),
    [
        (b'{"log_history": {"step": 1}}', "dict"),
        (b'{"global_step": 3}', "no 'log_history'"),
        (b"[]", "list"),
    ],
)
def test_valid_json_of_the_wrong_shape_is_one_error(document: bytes, found: str) -> None:
    events, cursor = parser_for("trainer_state.json").parse(document, "kept")
    [error] = events
    assert isinstance(error, SourceError)
    assert error.kind == "unexpected_shape"
    assert found in error.message
    assert error.location == f"{OUTPUT_DIR}/trainer_state.json"
    assert cursor == "kept"


def test_entries_that_cannot_be_placed_are_skipped() -> None:
    history = [42, {"loss": 1.0}, {"step": -1, "loss": 1.0}, train_entry(5)]
    events, _ = parser_for("trainer_state.json").parse(trainer_state(history, 5), None)
    assert [e.step for e in metrics_events(events)] == [5]


def test_an_entry_with_an_absurd_step_is_one_error_across_every_checkpoint() -> None:
    bogus = train_entry(9223372036854775807)
    history = [train_entry(5), bogus, train_entry(10)]
    first, cursor = parser_for("checkpoint-10/trainer_state.json").parse(
        trainer_state(history, 10), None
    )
    [error] = [e for e in first if isinstance(e, SourceError)]
    assert (error.kind, error.location) == (
        "step_out_of_range",
        f"{OUTPUT_DIR}/checkpoint-10/trainer_state.json",
    )
    assert "step 9223372036854775807" in error.message
    assert f"{MAX_SANE_STEP:,}" in error.message
    assert [e.step for e in metrics_events(first)] == [5, 10]
    # Every later checkpoint repeats the entry: it was reported once, with the first.
    later, _ = parser_for("checkpoint-20/trainer_state.json").parse(
        trainer_state([*history, train_entry(20)], 20), cursor
    )
    assert not [e for e in later if isinstance(e, SourceError)]
    assert [e.step for e in metrics_events(later)] == [20]


def test_a_cursor_saved_before_absurd_steps_were_counted_still_loads() -> None:
    _, cursor = parser_for("checkpoint-10/trainer_state.json").parse(CHECKPOINT_10, None)
    assert cursor is not None
    old = json.loads(cursor)
    del old["bad_steps"]
    events, _ = parser_for("checkpoint-20/trainer_state.json").parse(CHECKPOINT_20, json.dumps(old))
    assert [e.step for e in metrics_events(events)] == [15, 20, 20]


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(deadline=None)
@given(st.binary(max_size=300), st.none() | st.text(max_size=50))
def test_arbitrary_bytes_only_ever_raise_incomplete_document(
    data: bytes, cursor: str | None
) -> None:
    with contextlib.suppress(IncompleteDocument):
        parser_for("trainer_state.json").parse(data, cursor)


@settings(deadline=None)
@given(json_values, st.none() | st.text(max_size=50))
def test_arbitrary_json_never_raises(value: object, cursor: str | None) -> None:
    events, _ = parser_for("checkpoint-7/trainer_state.json").parse(
        json.dumps(value).encode(), cursor
    )
    # An unusable document is one error; a usable one may also report absurd steps.
    assert all(
        isinstance(e, MetricsLogged | StatusChanged | CheckpointSaved)
        or (isinstance(e, SourceError) and e.kind == "step_out_of_range")
        for e in events
    ) or (len(events) == 1 and isinstance(events[0], SourceError))


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A log_history: steps never decrease, entries at a step may share or differ in keys."""
    history: list[dict[str, Any]] = []
    step = 0
    for _ in range(draw(st.integers(0, 12))):
        step += draw(st.integers(0, 2))
        keys = draw(st.lists(st.sampled_from(["loss", "eval_loss", "grad_norm"]), min_size=1))
        history.append({"step": step, **{key: draw(st.floats(0, 10)) for key in keys}})
    return history


@settings(deadline=None)
@given(histories(), st.data())
def test_checkpoints_read_in_any_order_emit_the_full_history_exactly_once(
    history: list[dict[str, Any]], data: st.DataObject
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(history)), max_size=4))
    documents = [trainer_state(history[:cut], 0) for cut in cuts] + [trainer_state(history, 0)]
    order = data.draw(st.permutations(documents))
    cursor = None
    emitted: list[MetricsLogged] = []
    for document in order:
        events, cursor = parser_for("trainer_state.json").parse(document, cursor)
        emitted += metrics_events(events)
    once, _ = parser_for("trainer_state.json").parse(trainer_state(history, 0), None)

    def as_counter(events: list[MetricsLogged]) -> Counter[str]:
        return Counter(json.dumps([e.step, sorted(e.metrics.items())]) for e in events)

    assert as_counter(emitted) == as_counter(metrics_events(once))


def attempt(first: list[dict[str, Any]], resumed_from: int, last: int, loss: float) -> list[Any]:
    """A log_history as a run resumed from `resumed_from` writes it: the entries up to the
    checkpoint it loaded, then its own (other values) up to `last`."""
    kept = [e for e in first if e["step"] <= resumed_from]
    return kept + [train_entry(s, loss) for s in range(resumed_from + 5, last + 1, 5)]


def test_a_run_resumed_from_a_checkpoint_logs_its_steps_again_as_a_new_segment() -> None:
    first = [train_entry(s, 2.0) for s in range(5, 41, 5)]  # steps 5..40, checkpoints every 10
    cursor = None
    emitted: list[int] = []
    for ckpt in (10, 20, 30, 40):
        doc = trainer_state([e for e in first if e["step"] <= ckpt], ckpt)
        events, cursor = parser_for(f"checkpoint-{ckpt}/trainer_state.json").parse(
            doc, cursor, written=1000.0 + ckpt
        )
        emitted += [e.step for e in metrics_events(events)]
    assert emitted == list(range(5, 41, 5))
    # Resumed from checkpoint-20, after a crash at 40: checkpoint-30 and -40 are written anew.
    announced: list[int] = []
    for ckpt in (30, 40, 50):
        doc = trainer_state(attempt(first, 20, ckpt, loss=math.nan), ckpt)
        events, cursor = parser_for(f"checkpoint-{ckpt}/trainer_state.json").parse(
            doc, cursor, written=2000.0 + ckpt
        )
        new = metrics_events(events)
        emitted += [e.step for e in new]
        announced += [e.step for e in events if isinstance(e, CheckpointSaved)]
        assert all(math.isnan(e.metrics["loss"]) for e in new)  # the new attempt's values
    assert emitted[8:] == [25, 30, 35, 40, 45, 50]
    assert announced == [30, 40, 50]
    # After a restart every file is read again, oldest checkpoint first: nothing repeats.
    for ckpt, doc in (
        (10, trainer_state([e for e in first if e["step"] <= 10], 10)),
        (20, trainer_state([e for e in first if e["step"] <= 20], 20)),
        (30, trainer_state(attempt(first, 20, 30, math.nan), 30)),
        (40, trainer_state(attempt(first, 20, 40, math.nan), 40)),
        (50, trainer_state(attempt(first, 20, 50, math.nan), 50)),
    ):
        events, cursor = parser_for(f"checkpoint-{ckpt}/trainer_state.json").parse(
            doc, cursor, written=2000.0 + ckpt
        )
        assert metrics_events(events) == [], ckpt


def test_an_older_checkpoint_written_earlier_and_read_late_is_not_a_resume() -> None:
    _, cursor = parser_for("checkpoint-20/trainer_state.json").parse(
        CHECKPOINT_20, None, written=2000.0
    )
    events, _ = parser_for("checkpoint-10/trainer_state.json").parse(
        CHECKPOINT_10, cursor, written=1000.0
    )
    assert events == []
