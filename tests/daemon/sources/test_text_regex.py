"""Specification of the plain-text log parser: presets, custom regexes, noisy lines."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunewatch.daemon.events import MetricsLogged, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.metric_names import MAX_SANE_STEP
from tunewatch.daemon.sources.text_regex import PRESETS, TextLogParser, TextPattern

ORIGIN = FileOrigin(run="pretrain", source="train.log", path="/runs/pretrain/train.log")

MEGATRON_LINE = (
    " [2024-05-01 10:00:00] iteration      427/    5000 | consumed samples:        13664 |"
    " elapsed time per iteration (ms): 1234.5 | learning rate: 1.500E-04 |"
    " global batch size:    32 | lm loss: 8.560737E+00 | loss scale: 1.0 |"
    " grad norm: 35.500 | number of skipped iterations:   0 | number of nan iterations:   0 |"
)


def parse(pattern: TextPattern, *lines: bytes | str) -> list[RunEvent]:
    raw = [line.encode() if isinstance(line, str) else line for line in lines]
    return TextLogParser(ORIGIN, pattern).parse(raw, 1)


def only_metrics(events: list[RunEvent]) -> MetricsLogged:
    [event] = events
    assert isinstance(event, MetricsLogged)
    return event


def test_a_step_beyond_any_sane_bound_is_an_error_naming_the_value() -> None:
    [error] = parse(PRESETS["megatron"], " iteration 9223372036854775807/ 5000 | lm loss: 2.5 |")
    assert isinstance(error, SourceError)
    assert (error.kind, error.location) == ("step_out_of_range", "/runs/pretrain/train.log:1")
    assert "9.223372036854776e+18" in error.message
    assert f"{MAX_SANE_STEP:,}" in error.message


def test_step_loss_reads_a_step_with_thousands_separators() -> None:
    event = only_metrics(parse(PRESETS["step_loss"], "Step 18,500: loss=1.2345"))
    assert (event.run, event.source, event.step) == ("pretrain", "train.log", 18500)
    assert event.metrics == {"loss": 1.2345}


def test_step_loss_reads_every_name_value_pair_with_canonical_names() -> None:
    line = "step 120 | loss: 2.31 | lr: 3e-5 | grad_norm=0.8"
    event = only_metrics(parse(PRESETS["step_loss"], line))
    assert event.step == 120
    assert event.metrics == {"loss": 2.31, "learning_rate": 3e-5, "grad_norm": 0.8}


def test_step_loss_reads_a_total_and_non_finite_values() -> None:
    line = "2024-05-01 10:00:00 INFO Step 7/1,000 - loss: nan, grad_norm: inf, lr: 1.2e-05"
    event = only_metrics(parse(PRESETS["step_loss"], line))
    assert event.step == 7
    assert math.isnan(event.metrics["loss"])
    assert event.metrics["grad_norm"] == math.inf
    assert event.metrics["learning_rate"] == 1.2e-05
    assert event.metrics["total_steps"] == 1000


def test_step_loss_skips_values_that_are_not_plain_numbers() -> None:
    line = "step 5 | eta: 0:01:00 | took: 3.2s | loss: 1.0 | mode=train"
    assert only_metrics(parse(PRESETS["step_loss"], line)).metrics == {"loss": 1.0}


def test_megatron_lines_give_step_total_and_every_numeric_pair() -> None:
    event = only_metrics(parse(PRESETS["megatron"], MEGATRON_LINE))
    assert event.step == 427
    assert event.metrics == {
        "total_steps": 5000,
        "consumed samples": 13664,
        "elapsed time per iteration (ms)": 1234.5,
        "learning_rate": 1.5e-4,
        "global batch size": 32,
        "loss": 8.560737,
        "loss scale": 1.0,
        "grad_norm": 35.5,
        "number of skipped iterations": 0,
        "number of nan iterations": 0,
    }


def test_a_megatron_nan_loss_is_kept_as_nan() -> None:
    line = MEGATRON_LINE.replace("lm loss: 8.560737E+00", "lm loss: nan")
    event = only_metrics(parse(PRESETS["megatron"], line))
    assert math.isnan(event.metrics["loss"])


def test_lines_that_do_not_match_are_ignored_silently() -> None:
    lines = [
        "Loading checkpoint shards: 100%|██████████| 2/2",
        "Traceback (most recent call last):",
        "step 5 starting",  # a step but no metric
        "",
    ]
    assert parse(PRESETS["step_loss"], *lines) == []
    assert parse(PRESETS["megatron"], "training ...", "iteration 5 begins") == []


def test_invalid_utf8_is_replaced_not_an_error() -> None:
    event = only_metrics(parse(PRESETS["step_loss"], b"\xff\xfe step 3 | loss: 1.5 \xff"))
    assert (event.step, event.metrics) == (3, {"loss": 1.5})


def test_windows_line_endings_do_not_hide_the_last_pair() -> None:
    event = only_metrics(parse(PRESETS["megatron"], MEGATRON_LINE + "\r"))
    assert event.metrics["number of nan iterations"] == 0


def test_a_custom_regex_takes_step_and_named_metric_groups() -> None:
    pattern = TextPattern.from_regex(r"\[(?P<step>[\d,]+)\] loss (?P<loss>\S+) acc (?P<acc>\S+)")
    events = parse(pattern, "[1,024] loss 0.5 acc 0.75", "[1025] loss n/a acc 0.76")
    assert [(e.step, e.metrics) for e in events if isinstance(e, MetricsLogged)] == [
        (1024, {"loss": 0.5, "accuracy": 0.75}),
        (1025, {"accuracy": 0.76}),
    ]


def test_a_custom_regex_without_a_step_group_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match=r"named group for the step.*\(\?P<step>"):
        TextPattern.from_regex(r"loss (?P<loss>\S+)")


def test_a_custom_regex_that_does_not_compile_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        TextPattern.from_regex(r"step (?P<step>\d+")


@pytest.mark.parametrize("name", sorted(PRESETS))
@settings(deadline=None)
@given(lines=st.lists(st.binary(max_size=200), max_size=10))
def test_arbitrary_bytes_never_raise(name: str, lines: list[bytes]) -> None:
    for event in parse(PRESETS[name], *lines):
        assert isinstance(event, MetricsLogged)


@pytest.mark.parametrize("name", sorted(PRESETS))
@settings(deadline=None)
@given(lines=st.lists(st.text(max_size=200), max_size=10))
def test_arbitrary_text_never_raises(name: str, lines: list[str]) -> None:
    for event in parse(PRESETS[name], *lines):
        assert isinstance(event, MetricsLogged)


@settings(deadline=None)  # timing belongs to bench/, and CI machines stall
@given(st.integers(0, MAX_SANE_STEP), st.floats(), st.floats(allow_nan=False, allow_infinity=False))
def test_step_loss_lines_come_back_equal(step: int, loss: float, lr: float) -> None:
    event = only_metrics(parse(PRESETS["step_loss"], f"Step {step:,}: loss={loss!r}, lr={lr!r}"))
    assert event.step == step
    assert event.metrics["loss"] == loss or (math.isnan(loss) and math.isnan(event.metrics["loss"]))
    assert event.metrics["learning_rate"] == lr


@settings(deadline=None)
@given(st.integers(0, 10**9), st.integers(1, 10**9), st.floats(allow_nan=False))
def test_megatron_lines_come_back_equal(step: int, total: int, loss: float) -> None:
    line = f" iteration {step:>8}/{total:>8} | lm loss: {loss:E} | grad norm: {loss!r} |"
    event = only_metrics(parse(PRESETS["megatron"], line))
    assert (event.step, event.metrics["total_steps"]) == (step, total)
    assert event.metrics["loss"] == float(f"{loss:E}")
    assert event.metrics["grad_norm"] == loss
