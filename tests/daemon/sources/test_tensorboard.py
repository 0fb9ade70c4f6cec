"""TensorBoardParser: scalars from real event files match tensorboard's own loader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader  # type: ignore[import-untyped]
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2  # type: ignore[import-untyped]
from tensorboard.util import tensor_util  # type: ignore[import-untyped]

from tunewatch.daemon.events import MetricsBatch, MetricsEvent, MetricsLogged, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.metric_names import metric_name
from tunewatch.daemon.sources.tensorboard import TensorBoardParser
from tunewatch.daemon.sources.tfrecord import split_records

ORIGIN = FileOrigin(run="run", source="events.out.tfevents.1", path="/runs/r/events.out.tfevents.1")
Points = dict[tuple[int, str], float]


def parse_file(path: Path, parser: TensorBoardParser | None = None) -> list[RunEvent]:
    framed = split_records(path.read_bytes(), 1 << 24)
    assert framed.damage == []
    return (parser or TensorBoardParser(ORIGIN)).parse(framed.records, 1)


def points_of(events: list[RunEvent]) -> Points:
    found: Points = {}
    for event in events:
        if isinstance(event, MetricsEvent):
            for point in event.points():
                for name, value in point.metrics.items():
                    assert (point.step, name) not in found
                    found[point.step, name] = value
    return found


def oracle_points(path: Path) -> Points:
    """Every scalar as tensorboard's EventFileLoader reads it (it turns simple_value into
    scalars-plugin tensors), under tunewatch's names."""
    found: Points = {}
    for event in EventFileLoader(str(path)).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name != "scalars":
                continue
            name = metric_name(value.tag)
            assert name is not None
            found[event.step, name] = float(tensor_util.make_ndarray(value.tensor).item())
    return found


def same(a: Points, b: Points) -> bool:
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


def write_mixed_run(log_dir: Path, steps: int = 40) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        for step in range(steps):
            writer.add_scalar("train/loss", 3.0 / (step + 1), step)  # simple_value
            writer.add_scalar("train/learning_rate", 1e-4 * (1 - step / steps), step)
            writer.add_scalar("train/grad_norm", float("nan") if step == 7 else 0.5, step)
            writer.add_scalar("eval/loss", 2.0 + step, step, new_style=True)  # float32 tensor
            writer.add_scalar(
                "custom/double", step / 3, step, new_style=True, double_precision=True
            )
            if step % 10 == 0:
                writer.add_histogram("weights", np.arange(10.0), step)
                writer.add_image("sample", np.zeros((3, 4, 4)), step)
                writer.add_text("note", f"step {step}", step)
        writer.add_hparams({"lr": 1e-4}, {"hparam/accuracy": 0.5})
    return next(log_dir.glob("events.out.tfevents.*"))


def test_every_scalar_of_a_real_summary_writer_file_matches_tensorboards_loader(
    tmp_path: Path,
) -> None:
    path = write_mixed_run(tmp_path)
    events = parse_file(path)
    assert [e for e in events if isinstance(e, SourceError)] == []
    found = points_of(events)
    assert same(found, oracle_points(path))
    assert found[3, "loss"] == pytest.approx(0.75)
    assert found[3, "eval_loss"] == 5.0
    assert found[6, "custom/double"] == 2.0  # float64 tensor, exact
    assert math.isnan(found[7, "grad_norm"])


def test_points_carry_the_events_wall_time_and_gather_one_step(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        writer.add_scalar("train/loss", 1.5, 10, walltime=1_700_000_000.0)
        writer.add_scalar("train/learning_rate", 1e-3, 10, walltime=1_700_000_000.5)
        writer.add_scalar("train/loss", 1.4, 11, walltime=1_700_000_060.0)
    events = parse_file(next(tmp_path.glob("events.out.tfevents.*")))
    assert all(isinstance(e, MetricsLogged) for e in events)
    found = [(e.step, e.time, sorted(e.metrics)) for e in events if isinstance(e, MetricsLogged)]
    assert found == [
        (10, 1_700_000_000.0, ["learning_rate", "loss"]),
        (11, 1_700_000_060.0, ["loss"]),
    ]
    assert points_of(events)[10, "loss"] == 1.5


def test_a_long_catch_up_comes_as_batches(tmp_path: Path) -> None:
    path = write_mixed_run(tmp_path, steps=200)
    events = parse_file(path)
    assert any(isinstance(e, MetricsBatch) for e in events)
    assert same(points_of(events), oracle_points(path))


def test_tensor_scalars_are_read_after_a_restart_lost_their_metadata(tmp_path: Path) -> None:
    path = write_mixed_run(tmp_path)
    records = split_records(path.read_bytes(), 1 << 24).records
    half = len(records) // 2
    first = TensorBoardParser(ORIGIN).parse(records[:half], 1)
    # A new process resumes mid-file: the scalars plugin metadata came with the first values.
    second = TensorBoardParser(ORIGIN).parse(records[half:], half + 1)
    assert same({**points_of(first), **points_of(second)}, oracle_points(path))


def tensor_event(step: int, tag: str, tensor: tensor_pb2.TensorProto, plugin: str = "") -> bytes:
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
    )
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)
    event = event_pb2.Event(wall_time=1.7e9, step=step, summary=summary_pb2.Summary(value=[value]))
    return bytes(event.SerializeToString())


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array(1.5, dtype=np.float16), 1.5),
        (np.array(-7, dtype=np.int32), -7.0),
        (np.array(-(2**40), dtype=np.int64), -(2.0**40)),
        (np.array(200, dtype=np.uint8), 200.0),
        (np.array([0.25], dtype=np.float32), 0.25),  # one element, rank 1
    ],
)
def test_tensor_scalars_of_every_numeric_dtype(array: np.ndarray, expected: float) -> None:
    tensor = tensor_util.make_tensor_proto(array)
    record = tensor_event(4, "train/loss", tensor, "scalars")
    assert points_of(TensorBoardParser(ORIGIN).parse([record], 1)) == {(4, "loss"): expected}


def test_typed_value_fields_are_read_like_tensor_content() -> None:
    shape = tensor_shape_pb2.TensorShapeProto()
    as_float = tensor_pb2.TensorProto(dtype=1, tensor_shape=shape, float_val=[0.5])
    as_double = tensor_pb2.TensorProto(dtype=2, tensor_shape=shape, double_val=[0.125])
    as_int = tensor_pb2.TensorProto(dtype=3, tensor_shape=shape, int_val=[-3])
    records = [
        tensor_event(1, "a", as_float, "scalars"),
        tensor_event(1, "b", as_double, "scalars"),
        tensor_event(1, "c", as_int, "scalars"),
    ]
    found = points_of(TensorBoardParser(ORIGIN).parse(records, 1))
    assert found == {(1, "a"): 0.5, (1, "b"): 0.125, (1, "c"): -3.0}


def test_tensors_of_other_plugins_and_many_elements_are_no_metrics() -> None:
    one = tensor_util.make_tensor_proto(np.array(1.0, dtype=np.float32))
    many = tensor_util.make_tensor_proto(np.zeros((4, 3), dtype=np.float32))
    records = [
        tensor_event(1, "pr", one, "pr_curves"),
        tensor_event(1, "hist", many, "histograms"),
        tensor_event(1, "unknown_plugin_matrix", many),
        tensor_event(1, "text", tensor_util.make_tensor_proto(np.array(b"hi")), "text"),
    ]
    assert TensorBoardParser(ORIGIN).parse(records, 1) == []


def test_a_bad_step_or_a_broken_record_is_reported_and_the_rest_read() -> None:
    good = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss", simple_value=1.0)])
    negative = event_pb2.Event(wall_time=1.7e9, step=-5, summary=good).SerializeToString()
    fine = event_pb2.Event(wall_time=1.7e9, step=6, summary=good).SerializeToString()
    events = TensorBoardParser(ORIGIN).parse([negative, b"\x0a\xff\x01", fine], 1)
    kinds = [(e.kind, e.location) for e in events if isinstance(e, SourceError)]
    assert kinds == [
        ("step_out_of_range", f"{ORIGIN.location}:record 1"),
        ("invalid_event", f"{ORIGIN.location}:record 2"),
    ]
    assert points_of(events) == {(6, "loss"): 1.0}


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        ("train/loss", "loss"),
        ("eval/loss", "eval_loss"),
        ("train/learning_rate", "learning_rate"),
        ("train/grad_norm", "grad_norm"),
        ("eval/squad_loss", "eval_squad_loss"),
        ("train_loss_step", "loss"),
        ("train_loss_epoch", "train_loss_epoch"),
        ("val_loss", "eval_loss"),
        ("val_acc", "eval_accuracy"),
        ("hp_metric", None),
    ],
)
def test_trainer_and_lightning_tags_have_canonical_names(tag: str, name: str | None) -> None:
    assert metric_name(tag) == name


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=8))
def test_arbitrary_records_never_raise(records: list[bytes]) -> None:
    events = TensorBoardParser(ORIGIN).parse(records, 1)
    assert all(isinstance(e, MetricsEvent | SourceError) for e in events)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**6),
    st.floats(width=32, allow_nan=False),
    st.text(min_size=1, max_size=20),
)
def test_any_simple_value_comes_back_as_protobuf_wrote_it(
    step: int, value: float, tag: str
) -> None:
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    record = event_pb2.Event(wall_time=1.7e9, step=step, summary=summary).SerializeToString()
    name = metric_name(tag)
    expected = {} if name is None else {(step, name): value}
    assert points_of(TensorBoardParser(ORIGIN).parse([record], 1)) == expected
