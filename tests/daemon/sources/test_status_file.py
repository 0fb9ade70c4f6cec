"""Specification of the `training_status.json` parser: status changes and per-step metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunewatch.daemon.events import MetricsLogged, RunEvent, SourceError, StatusChanged
from tunewatch.daemon.sources.base import FileOrigin, IncompleteDocument
from tunewatch.daemon.sources.metric_names import MAX_SANE_STEP
from tunewatch.daemon.sources.status_file import StatusFileParser

ORIGIN = FileOrigin(run="sft", source="training_status.json", path="/runs/sft/training_status.json")


def status_document(**fields: Any) -> bytes:
    document = {
        "status": "training",
        "current_step": 17601,
        "total_steps": 37487,
        "loss": 0.7489,
        "accuracy": 0.597,
        "pid": 2814650,
        "updated": "2024-05-01T10:00:00",
        **fields,
    }
    return json.dumps(document).encode()


def parse(data: bytes, cursor: str | None = None) -> tuple[list[RunEvent], str | None]:
    return StatusFileParser(ORIGIN).parse(data, cursor)


def test_the_first_read_reports_status_and_the_current_metrics() -> None:
    (status, logged), _ = parse(status_document())
    assert isinstance(status, StatusChanged)
    assert status == StatusChanged(
        "sft",
        "training",
        "training_status.json",
        step=17601,
        total_steps=37487,
        pid=2814650,
        time=status.time,
    )
    assert isinstance(logged, MetricsLogged)
    assert logged.step == 17601
    assert logged.metrics == {"loss": 0.7489, "accuracy": 0.597, "total_steps": 37487.0}


def test_the_same_document_again_reports_nothing() -> None:
    _, cursor = parse(status_document())
    events, again = parse(status_document(), cursor)
    assert events == []
    assert again == cursor


def test_a_new_step_reports_only_its_metrics() -> None:
    _, cursor = parse(status_document())
    events, _ = parse(status_document(current_step=17602, loss=0.74), cursor)
    [logged] = events
    assert isinstance(logged, MetricsLogged)
    assert (logged.step, logged.metrics["loss"]) == (17602, 0.74)


def test_an_older_step_reports_no_metrics() -> None:
    _, cursor = parse(status_document())
    assert parse(status_document(current_step=17000), cursor)[0] == []


@pytest.mark.parametrize(
    "change",
    [{"status": "completed"}, {"total_steps": 40000}, {"pid": 4242}],
)
def test_a_changed_status_total_or_pid_is_reported(change: dict[str, Any]) -> None:
    _, cursor = parse(status_document())
    [changed] = parse(status_document(**change), cursor)[0]
    assert isinstance(changed, StatusChanged)
    assert (changed.status, changed.total_steps, changed.pid) == (
        change.get("status", "training"),
        change.get("total_steps", 37487),
        change.get("pid", 2814650),
    )


def test_the_status_is_reported_in_lower_case() -> None:
    [changed], _ = parse(b'{"status": " Completed "}')
    assert isinstance(changed, StatusChanged)
    assert changed.status == "completed"


def test_step_global_step_and_max_steps_spellings_are_accepted() -> None:
    events, _ = parse(b'{"status": "training", "global_step": 5, "max_steps": 50, "loss": 1.0}')
    changed, logged = events
    assert isinstance(changed, StatusChanged) and isinstance(logged, MetricsLogged)
    assert (changed.step, changed.total_steps, logged.step) == (5, 50, 5)
    events, _ = parse(b'{"status": "training", "step": 6, "loss": 1.0}')
    assert [getattr(e, "step", None) for e in events] == [6, 6]


def test_a_step_beyond_any_sane_bound_is_an_error_and_never_the_runs_step() -> None:
    events, cursor = parse(status_document(current_step=9223372036854775807))
    error, changed = events
    assert isinstance(error, SourceError)
    assert (error.kind, error.location) == ("step_out_of_range", "/runs/sft/training_status.json")
    assert "current_step 9223372036854775807" in error.message
    assert f"{MAX_SANE_STEP:,}" in error.message
    assert isinstance(changed, StatusChanged)
    assert (changed.status, changed.step) == ("training", None)
    # Read again (a restart), it is not news; the next sane step's metrics come as usual.
    assert parse(status_document(current_step=9223372036854775807), cursor)[0] == []
    [logged], _ = parse(status_document(current_step=17602), cursor)
    assert isinstance(logged, MetricsLogged)
    assert logged.step == 17602


def test_a_quoted_step_and_quoted_metrics_are_read_as_numbers() -> None:
    [changed, logged], _ = parse(status_document(current_step="17601", loss="0.75"))
    assert isinstance(changed, StatusChanged) and isinstance(logged, MetricsLogged)
    assert (changed.step, logged.step, logged.metrics["loss"]) == (17601, 17601, 0.75)


def test_a_document_without_status_still_reports_metrics() -> None:
    [logged], _ = parse(b'{"step": 3, "loss": 1.5}')
    assert isinstance(logged, MetricsLogged)
    assert logged.metrics == {"loss": 1.5}


@pytest.mark.parametrize("cut", [0, 1, 20, len(status_document()) - 1])
def test_a_half_written_document_is_incomplete(cut: int) -> None:
    with pytest.raises(IncompleteDocument):
        parse(status_document()[:cut])


def test_json_that_is_not_an_object_is_an_unexpected_shape() -> None:
    events, cursor = parse(b'["training", 5]', "kept")
    [error] = events
    assert isinstance(error, SourceError)
    assert error.kind == "unexpected_shape"
    assert error.location == "/runs/sft/training_status.json"
    assert cursor == "kept"


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
status_fields = st.dictionaries(
    st.sampled_from(["status", "current_step", "step", "total_steps", "pid", "loss"]), json_values
)


@settings(deadline=None)
@given(st.binary(max_size=200), st.none() | st.text(max_size=40))
def test_arbitrary_bytes_only_ever_raise_incomplete_document(
    data: bytes, cursor: str | None
) -> None:
    try:
        events, _ = parse(data, cursor)
    except IncompleteDocument:
        return
    assert all(isinstance(e, MetricsLogged | StatusChanged | SourceError) for e in events)


@settings(deadline=None)
@given(json_values | status_fields, st.none() | st.text(max_size=40))
def test_arbitrary_json_never_raises(value: object, cursor: str | None) -> None:
    events, _ = parse(json.dumps(value).encode(), cursor)
    assert all(isinstance(e, MetricsLogged | StatusChanged | SourceError) for e in events)


@settings(deadline=None)
@given(st.lists(status_fields, max_size=6))
def test_rereading_any_document_reports_nothing_new(documents: list[dict[str, Any]]) -> None:
    cursor = None
    for document in documents:
        data = json.dumps(document).encode()
        _, cursor = parse(data, cursor)
        assert parse(data, cursor)[0] == []
