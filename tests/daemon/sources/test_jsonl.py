"""Specification of the JSON Lines parser (LLaMA-Factory `trainer_log.jsonl` and generic logs)."""

from __future__ import annotations

import json
import math
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from tunewatch.daemon.events import MetricsBatch, MetricsEvent, MetricsLogged, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.jsonl import JsonlParser
from tunewatch.daemon.sources.metric_names import MAX_SANE_STEP

ORIGIN = FileOrigin(run="llama-sft", source="trainer_log.jsonl", path="/runs/sft/trainer_log.jsonl")


def parse(*lines: bytes | str, first_line_no: int = 1) -> list[object]:
    raw = [line.encode() if isinstance(line, str) else line for line in lines]
    return list(JsonlParser(ORIGIN).parse(raw, first_line_no))


def llama_factory_line(step: int, loss: float = 1.2345) -> str:
    return json.dumps(
        {
            "current_steps": step,
            "total_steps": 1000,
            "loss": loss,
            "lr": 4.9e-05,
            "epoch": 0.01,
            "percentage": 1.0,
            "elapsed_time": "0:00:10",
            "remaining_time": "0:16:40",
        }
    )


def test_a_llama_factory_line_becomes_one_metrics_event() -> None:
    before = time.time()
    [event] = parse(llama_factory_line(10))
    assert isinstance(event, MetricsLogged)
    assert (event.run, event.source, event.step) == ("llama-sft", "trainer_log.jsonl", 10)
    assert event.metrics == {
        "total_steps": 1000.0,
        "loss": 1.2345,
        "learning_rate": 4.9e-05,
        "epoch": 0.01,
    }
    assert before <= event.time <= time.time()


def test_a_generic_line_keeps_every_numeric_metric() -> None:
    [event] = parse('{"step": 5, "loss": 2.3, "eval_loss": 2.5, "grad_norm": 1.1}')
    assert isinstance(event, MetricsLogged)
    assert event.step == 5
    assert event.metrics == {"loss": 2.3, "eval_loss": 2.5, "grad_norm": 1.1}


def test_nan_and_infinity_literals_written_by_python_json_are_parsed() -> None:
    line = json.dumps({"step": 7, "loss": math.nan, "grad_norm": math.inf, "lr": -math.inf})
    assert "NaN" in line  # what trainers using json.dumps actually write
    [event] = parse(line)
    assert isinstance(event, MetricsLogged)
    assert math.isnan(event.metrics["loss"])
    assert event.metrics["grad_norm"] == math.inf
    assert event.metrics["learning_rate"] == -math.inf


def test_each_line_of_a_batch_is_one_event_in_order() -> None:
    events = parse(*(llama_factory_line(step) for step in (10, 20, 30)))
    assert [e.step for e in events if isinstance(e, MetricsLogged)] == [10, 20, 30]


def test_a_numeric_time_field_is_the_event_time() -> None:
    [a, b] = parse(
        '{"step": 1, "loss": 2.0, "time": 1714557600.5}',
        '{"step": 2, "loss": 2.0, "timestamp": 1714557700}',
    )
    assert isinstance(a, MetricsLogged) and isinstance(b, MetricsLogged)
    assert (a.time, b.time) == (1714557600.5, 1714557700.0)
    assert "time" not in a.metrics and "timestamp" not in b.metrics


def test_a_time_that_is_not_a_unix_time_is_ignored() -> None:
    before = time.time()
    [event] = parse('{"step": 1, "loss": 2.0, "time": "10:00"}')
    assert isinstance(event, MetricsLogged)
    assert event.time >= before


def test_blank_lines_are_skipped_silently() -> None:
    assert parse(b"", b"   ", b"\t") == []


def test_a_line_with_a_step_but_no_numeric_metric_is_skipped_silently() -> None:
    assert parse('{"step": 3, "note": "saving checkpoint", "elapsed_time": "0:01:00"}') == []


def test_invalid_json_is_an_error_at_its_line_saying_what_is_wrong() -> None:
    [error] = parse('{"step": 1, "loss": 2}', '{"step": 1 "loss": 2}', first_line_no=41)[1:]
    assert isinstance(error, SourceError)
    assert error.kind == "invalid_json"
    assert error.location == "/runs/sft/trainer_log.jsonl:42"
    assert error.message.startswith("invalid JSON: Expecting ',' delimiter (column 12)")
    assert '{"step": 1 "loss": 2}' in error.message


def test_an_error_message_never_carries_a_whole_long_line() -> None:
    long_line = '{"step": 1, "note": "' + "x" * 100_000
    [error] = parse(long_line)
    assert isinstance(error, SourceError)
    assert error.kind == "invalid_json"
    assert len(error.message) < 400


def test_invalid_utf8_is_an_error() -> None:
    [error] = parse(b'{"step": 1, "loss": "\xff\xfe"}')
    assert isinstance(error, SourceError)
    assert error.kind == "invalid_utf8"
    assert error.location == "/runs/sft/trainer_log.jsonl:1"
    assert "UTF-8" in error.message


def test_a_json_value_that_is_not_an_object_is_an_error() -> None:
    kinds = [e.kind for e in parse("[1, 2]", "3", '"step"', "null") if isinstance(e, SourceError)]
    assert kinds == ["not_an_object"] * 4


def test_an_object_without_step_is_an_error_naming_its_keys() -> None:
    [error] = parse('{"loss": 2.0, "lr": 0.1}')
    assert isinstance(error, SourceError)
    assert error.kind == "missing_step"
    assert "loss, lr" in error.message


def test_a_fractional_step_is_a_missing_step_naming_the_bad_value() -> None:
    [error] = parse('{"step": 10.5, "loss": 2.0}')
    assert isinstance(error, SourceError)
    assert error.kind == "missing_step"
    assert "step=10.5" in error.message


def test_quoted_numbers_are_numbers_and_other_text_is_not_a_metric() -> None:
    [event] = parse('{"step": "12", "loss": "1.2", "lr": " 1e-5 ", "model": "llama"}')
    assert isinstance(event, MetricsLogged)
    assert event.step == 12
    assert event.metrics == {"loss": 1.2, "learning_rate": 1e-5}


def test_a_step_beyond_any_sane_bound_is_an_error_naming_the_value_and_the_bound() -> None:
    [error, event] = parse(
        '{"current_steps": 9223372036854775807, "loss": 1.0}',
        '{"current_steps": 10, "loss": 2.0}',
        first_line_no=7,
    )
    assert isinstance(error, SourceError)
    assert error.kind == "step_out_of_range"
    assert error.location == "/runs/sft/trainer_log.jsonl:7"
    assert "9223372036854775807" in error.message
    assert f"{MAX_SANE_STEP:,}" in error.message
    assert isinstance(event, MetricsLogged)
    assert event.step == 10


def test_errors_do_not_stop_the_lines_after_them() -> None:
    events = parse("{oops", llama_factory_line(10), b"\xff", llama_factory_line(20))
    assert [type(e).__name__ for e in events] == [
        "SourceError",
        "MetricsLogged",
        "SourceError",
        "MetricsLogged",
    ]


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@settings(deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_arbitrary_bytes_never_raise(lines: list[bytes]) -> None:
    for event in parse(*lines):
        assert isinstance(event, MetricsLogged | SourceError)


@settings(deadline=None)
@given(st.lists(json_values, max_size=10))
def test_arbitrary_json_never_raises(values: list[object]) -> None:
    for event in parse(*(json.dumps(value) for value in values)):
        assert isinstance(event, MetricsLogged | SourceError)


metric_names = st.sampled_from(
    ["loss", "eval_loss", "learning_rate", "grad_norm", "accuracy", "epoch", "rewards/chosen"]
)


@settings(deadline=None)
@given(st.integers(0, MAX_SANE_STEP), st.dictionaries(metric_names, st.floats(), min_size=1))
def test_metrics_written_with_json_dumps_come_back_equal(
    step: int, values: dict[str, float]
) -> None:
    [event] = parse(json.dumps({"step": step, **values}))
    assert isinstance(event, MetricsLogged)
    assert event.step == step
    assert event.metrics.keys() == values.keys()
    for name, value in values.items():
        got = event.metrics[name]
        assert got == value or (math.isnan(got) and math.isnan(value))


# -- batches: a long run of same-shaped lines travels as columns, with the same points ----------


def fixed_clock() -> float:
    return 1_700_000_000.0


def parse_with(batch_min_points: int, lines: list[bytes]) -> list[object]:
    parser = JsonlParser(ORIGIN, batch_min_points=batch_min_points, clock=fixed_clock)
    return list(parser.parse(lines, 1))


def as_points(events: list[object]) -> list[tuple[object, ...]]:
    """What a subscriber of MetricsEvent sees, NaN-safe: batches and single points alike."""
    seen: list[tuple[object, ...]] = []
    for event in events:
        if isinstance(event, MetricsEvent):
            seen.extend(
                (p.run, p.source, p.step, repr(sorted(p.metrics.items())), p.time)
                for p in event.points()
            )
        else:
            assert isinstance(event, SourceError)
            seen.append((event.kind, event.location, event.message))
    return seen


def test_a_long_run_of_same_shaped_lines_is_one_batch_of_columns() -> None:
    lines = [llama_factory_line(step, loss=1.0 + step / 100).encode() for step in range(1, 101)]
    [batch] = parse_with(16, lines)
    assert isinstance(batch, MetricsBatch)
    assert (batch.run, batch.source, len(batch)) == ("llama-sft", "trainer_log.jsonl", 100)
    assert list(batch.steps) == list(range(1, 101))
    assert set(batch.columns) == {"total_steps", "loss", "learning_rate", "epoch"}
    assert batch.columns["loss"][9] == 1.1
    assert set(batch.times) == {fixed_clock()}
    assert as_points([batch]) == as_points(parse_with(10**9, lines))


def test_eval_lines_between_train_lines_keep_their_order() -> None:
    lines = []
    for step in range(1, 61):
        lines.append(json.dumps({"step": step, "loss": 2.0, "lr": 1e-4}).encode())
        if step % 20 == 0:
            lines.append(json.dumps({"step": step, "eval_loss": 2.5}).encode())
    events = parse_with(16, lines)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["MetricsBatch", "MetricsLogged"] * 3
    assert as_points(events) == as_points(parse_with(10**9, lines))


def test_a_column_of_numbers_some_written_as_text_is_still_one_batch() -> None:
    lines = [json.dumps({"step": s, "loss": 1.0 if s != 7 else "nan"}).encode() for s in range(40)]
    lines += [json.dumps({"step": s, "loss": f"{s / 10}"}).encode() for s in range(40, 80)]
    events = parse_with(16, lines)
    assert [type(e) for e in events] == [MetricsBatch]
    points = list(events[0].points())  # type: ignore[attr-defined]
    assert math.isnan(points[7].metrics["loss"])
    assert points[79].metrics == {"loss": 7.9}
    assert as_points(events) == as_points(parse_with(10**9, lines))


def test_an_absurd_step_in_a_long_run_is_an_error_at_its_line_and_the_rest_are_points() -> None:
    steps = [*range(20), 2**63 - 1, *range(21, 40)]
    lines = [json.dumps({"step": s, "loss": 1.0}).encode() for s in steps]
    events = parse_with(16, lines)
    errors = [e for e in events if isinstance(e, SourceError)]
    assert [(e.kind, e.location) for e in errors] == [
        ("step_out_of_range", "/runs/sft/trainer_log.jsonl:21")
    ]
    assert len([p for e in events if isinstance(e, MetricsEvent) for p in e.points()]) == 39
    assert as_points(events) == as_points(parse_with(10**9, lines))


raw_keys = st.sampled_from(
    [
        "step",
        "current_steps",
        "global_step",
        "loss",
        "train_loss",
        "eval_loss",
        "lr",
        "grad_norm",
        "epoch",
        "time",
        "timestamp",
        "percentage",
        "note",
        "custom/metric",
    ]
)
# No NaN literal: orjson refuses it, so a log holding one is read line by line (tested above).
odd_values = (
    st.integers(-5, 2**70)  # steps beyond the sane bound too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
    | st.sampled_from(["nan", "-Infinity", "x", "10:00", " 3 ", "1e-5", "+2", "12", "1e400"])
    | st.floats().map(repr)  # quoted numbers
    | st.floats(0, 2e12)
)


@st.composite
def jsonl_logs(draw: st.DrawFn) -> list[bytes]:
    """Runs of lines sharing a layout, most with plain values (the fast path), some odd."""
    lines: list[bytes] = []
    step = 0
    for _ in range(draw(st.integers(1, 4))):
        keys = draw(st.lists(raw_keys, min_size=1, max_size=6, unique=True))
        odd = draw(st.booleans())
        quoted = draw(st.booleans())  # a writer that quotes every metric value
        if not odd and not {"step", "current_steps", "global_step"} & set(keys):
            keys.insert(0, "step")
        for _ in range(draw(st.integers(1, 40))):
            record: dict[str, object] = {}
            order = draw(st.permutations(keys)) if odd else keys
            for key in order:
                if odd:
                    record[key] = draw(odd_values)
                elif key in ("step", "current_steps", "global_step"):
                    record[key] = step
                elif key in ("time", "timestamp"):
                    record[key] = 1.7e9 + step
                elif key == "note":
                    record[key] = "saving"
                else:
                    value = draw(st.floats(allow_nan=False, allow_infinity=False))
                    record[key] = repr(value) if quoted else value
            step += 1
            lines.append(json.dumps(record).encode())
    return lines


@given(jsonl_logs())
def test_batches_carry_exactly_the_points_of_the_per_line_rules(lines: list[bytes]) -> None:
    assert as_points(parse_with(16, lines)) == as_points(parse_with(10**9, lines))
    assert as_points(parse_with(1, lines)) == as_points(parse_with(10**9, lines))
