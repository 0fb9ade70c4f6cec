"""Specification of the Lightning CSVLogger `metrics.csv` parser: header, sparse rows, rewrites."""

from __future__ import annotations

import csv
import io
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from tunewatch.daemon.events import MetricsLogged, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.lightning_csv import LightningCsvParser
from tunewatch.daemon.sources.metric_names import MAX_SANE_STEP

ORIGIN = FileOrigin(
    run="lit", source="lightning_logs/version_0/metrics.csv", path="/runs/lit/metrics.csv"
)


def feed(parser: LightningCsvParser, text: str, first_line_no: int = 1) -> list[RunEvent]:
    return parser.parse([line.encode() for line in text.splitlines()], first_line_no)


def logged(events: list[RunEvent]) -> list[tuple[int, dict[str, float]]]:
    return [(e.step, dict(e.metrics)) for e in events if isinstance(e, MetricsLogged)]


def test_sparse_rows_give_only_their_filled_cells() -> None:
    text = "epoch,step,train_loss,val_loss\n0,49,2.5,\n0,99,2.1,\n0,99,,2.7\n"
    events = feed(LightningCsvParser(ORIGIN), text)
    assert logged(events) == [
        (49, {"epoch": 0.0, "loss": 2.5}),
        (99, {"epoch": 0.0, "loss": 2.1}),
        (99, {"epoch": 0.0, "eval_loss": 2.7}),
    ]
    assert all(e.run == "lit" and e.source == ORIGIN.source for e in events)


def test_a_grown_header_is_used_for_the_rows_after_the_rewrite() -> None:
    parser = LightningCsvParser(ORIGIN)
    feed(parser, "epoch,step,train_loss\n0,49,2.5\n")
    # Lightning rewrote the file with a new column; the tailer re-feeds line 1, then new rows.
    assert feed(parser, "epoch,step,train_loss,val_acc") == []
    events = feed(parser, "0,99,,0.61\n", first_line_no=4)
    assert logged(events) == [(99, {"epoch": 0.0, "eval_accuracy": 0.61})]


def test_cells_are_read_with_csv_quoting() -> None:
    text = 'step,"val/loss","note, free text"\n5,"1.25","a, b"\n'
    assert logged(feed(LightningCsvParser(ORIGIN), text)) == [(5, {"eval_loss": 1.25})]


def test_a_nan_cell_is_a_nan_metric() -> None:
    [(_, metrics)] = logged(feed(LightningCsvParser(ORIGIN), "step,train_loss\n3,nan\n"))
    assert math.isnan(metrics["loss"])


def test_a_row_with_the_wrong_cell_count_is_an_error_at_its_line() -> None:
    events = feed(LightningCsvParser(ORIGIN), "epoch,step,train_loss\n0,1,2.5,9\n0,2,2.4\n")
    error, ok = events
    assert isinstance(error, SourceError)
    assert error.kind == "bad_csv_row"
    assert error.location == "/runs/lit/metrics.csv:2"
    assert "4 cells but the header has 3" in error.message
    assert logged([ok]) == [(2, {"epoch": 0.0, "loss": 2.4})]


def test_invalid_utf8_is_an_error() -> None:
    parser = LightningCsvParser(ORIGIN)
    feed(parser, "step,train_loss")
    [error] = parser.parse([b"1,\xff"], 2)
    assert isinstance(error, SourceError)
    assert (error.kind, error.location) == ("invalid_utf8", "/runs/lit/metrics.csv:2")


def test_a_row_without_a_step_is_an_error() -> None:
    [error] = feed(LightningCsvParser(ORIGIN), "epoch,step,train_loss\n0,,2.5\n")
    assert isinstance(error, SourceError)
    assert error.kind == "missing_step"


def test_a_step_beyond_any_sane_bound_is_an_error_and_the_rows_after_it_count() -> None:
    events = feed(LightningCsvParser(ORIGIN), "step,train_loss\n9223372036854775807,2.5\n5,2.4\n")
    error, ok = events
    assert isinstance(error, SourceError)
    assert (error.kind, error.location) == ("step_out_of_range", "/runs/lit/metrics.csv:2")
    assert f"{MAX_SANE_STEP:,}" in error.message
    assert logged([ok]) == [(5, {"loss": 2.4})]


def test_rows_before_any_header_are_errors_not_guesses() -> None:
    [error] = feed(LightningCsvParser(ORIGIN), "0,1,2.5", first_line_no=2)
    assert isinstance(error, SourceError)
    assert error.kind == "missing_header"


def test_blank_lines_and_rows_without_metrics_are_skipped() -> None:
    assert feed(LightningCsvParser(ORIGIN), "step,train_loss\n\n7,\n") == []


def test_a_byte_order_mark_does_not_rename_the_first_column() -> None:
    assert logged(feed(LightningCsvParser(ORIGIN), "\ufeffstep,loss\n1,0.5")) == [
        (1, {"loss": 0.5})
    ]


@settings(deadline=None)
@given(st.lists(st.binary(max_size=100), max_size=8), st.integers(1, 3))
def test_arbitrary_bytes_never_raise(lines: list[bytes], first_line_no: int) -> None:
    for event in LightningCsvParser(ORIGIN).parse(lines, first_line_no):
        assert isinstance(event, MetricsLogged | SourceError)


metric_columns = st.lists(
    st.sampled_from(["train_loss", "val_loss", "lr-Adam", "grad_norm", "val_acc", "epoch"]),
    unique=True,
)
cells = st.none() | st.floats()


@settings(deadline=None)
@given(metric_columns, st.data())
def test_rows_written_by_the_csv_module_come_back_equal(
    columns: list[str], data: st.DataObject
) -> None:
    rows = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, MAX_SANE_STEP),
                st.lists(cells, min_size=len(columns), max_size=len(columns)),
            )
        )
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", *columns])
    for step, values in rows:
        writer.writerow([step, *("" if v is None else repr(v) for v in values)])
    events = feed(LightningCsvParser(ORIGIN), buffer.getvalue())
    expected = [(step, values) for step, values in rows if any(v is not None for v in values)]
    assert len(events) == len(expected)
    for event, (step, values) in zip(events, expected, strict=True):
        assert isinstance(event, MetricsLogged)
        assert event.step == step
        written = [v for v in values if v is not None]
        assert len(event.metrics) == len(written)
        for got, value in zip(event.metrics.values(), written, strict=True):
            assert got == value or (math.isnan(got) and math.isnan(value))
