"""Every parser hands on text the store can hold, whatever text its input holds.

A lone surrogate is valid JSON (`"\\ud800"`) and is what a file name that is not UTF-8 decodes
to; SQLite and orjson refuse it. Parsers keep it visible as its escape, and ingest goes on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunewatch.daemon.events import (
    CheckpointSaved,
    MetricsBatch,
    MetricsLogged,
    RunEvent,
    SourceError,
    StatusChanged,
)
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.hf_trainer import TrainerStateParser
from tunewatch.daemon.sources.jsonl import JsonlParser
from tunewatch.daemon.sources.lightning_csv import LightningCsvParser
from tunewatch.daemon.sources.status_file import StatusFileParser
from tunewatch.daemon.sources.text_regex import PRESETS, TextLogParser
from tunewatch.daemon.store import Store
from tunewatch.daemon.text import storable_text

# Any text, lone surrogates often included (hypothesis leaves them out unless asked, and rarely
# draws them from a mixed alphabet).
surrogates = st.characters(categories=["Cs"])
any_text = st.text() | st.text(surrogates) | st.text(surrogates | st.characters())
# What surrogateescape makes of a directory name holding the byte 0xff.
ODD_DIR = b"/runs/odd-\xff".decode("utf-8", "surrogateescape")


def encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- the helper -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("\ud800", "\\ud800"),
        ("loss\udfff", "loss\\udfff"),
        ("odd-\udcff.jsonl", "odd-\\udcff.jsonl"),  # byte 0xff under surrogateescape
        ("train\ud800ing", "train\\ud800ing"),
    ],
)
def test_a_lone_surrogate_becomes_its_visible_escape(raw: str, kept: str) -> None:
    assert storable_text(raw) == kept


@pytest.mark.parametrize("text", ["loss", "", "перплексия", "损失", "loss 😀", "a\\ud800"])
def test_text_that_encodes_is_returned_unchanged(text: str) -> None:
    assert storable_text(text) == text


@given(any_text)
def test_the_result_always_encodes_and_escaping_twice_changes_nothing(text: str) -> None:
    once = storable_text(text)
    assert encodes(once)
    assert storable_text(once) == once
    if encodes(text):
        assert once == text


# -- every parser ---------------------------------------------------------------------------------


def origin(name: str) -> FileOrigin:
    """A file in a run directory whose name is not UTF-8."""
    return FileOrigin(run="odd-\udcff", source=f"{name}\udcff", path=f"{ODD_DIR}/{name}\udcff")


def jsonl_events() -> list[RunEvent]:
    lines = [
        b'{"current_steps": 4, "\\ud800": 1.0}',  # the issue's line
        b'{"current_steps": 5, "loss": 1.0, "note": "\\udfff"}',
        b'{"\\ud800": 1.0, "lr": 0.1}',  # no step: the error names the keys
        b'{"current_steps": "\\ud800", "loss": 1.0}',
        '{"step": 6, "loss\udcff": 2.0}'.encode("utf-8", "surrogatepass"),
    ]
    return JsonlParser(origin("trainer_log.jsonl")).parse(lines, 1)


def jsonl_batch_events() -> list[RunEvent]:
    lines = [json.dumps({"step": step, "loss\ud800": 1.0}).encode() for step in range(40)]
    return JsonlParser(origin("trainer_log.jsonl"), batch_min_points=16).parse(lines, 1)


def status_events() -> list[RunEvent]:
    document = b'{"status": "train\\ud800ing", "current_step": 3, "\\udfff": 1.0, "loss": 2.0}'
    return StatusFileParser(origin("training_status.json")).parse(document, None)[0]


def trainer_state_events() -> list[RunEvent]:
    document = {
        "global_step": 10,
        "max_steps": 30,
        "best_metric": 1.5,
        "best_model_checkpoint": f"{ODD_DIR}/checkpoint-\ud800",
        "log_history": [{"step": 10, "loss": 1.0, "\udfff": 2.0}],
    }
    path = f"{ODD_DIR}/checkpoint-10/trainer_state.json"
    parser = TrainerStateParser(FileOrigin("odd-\udcff", "trainer_state.json", path))
    return parser.parse(json.dumps(document).encode(), None)[0]


def csv_events() -> list[RunEvent]:
    lines = [b"step,train_loss", b"1,0.5", b"2,\xff", b"3"]
    return LightningCsvParser(origin("metrics.csv")).parse(lines, 1)


def text_events() -> list[RunEvent]:
    lines = [b"Step 18,500: loss=1.23 \xff", b"step 19: \xffloss=1.5"]
    return TextLogParser(origin("train.log"), PRESETS["step_loss"]).parse(lines, 1)


PARSERS: dict[str, Callable[[], list[RunEvent]]] = {
    "jsonl": jsonl_events,
    "jsonl columns": jsonl_batch_events,
    "status file": status_events,
    "trainer_state.json": trainer_state_events,
    "lightning csv": csv_events,
    "text log": text_events,
}


def texts(event: RunEvent) -> Iterator[str]:
    """Every piece of text in an event: its str fields and the names of its metrics."""
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(value, str):
            yield value
        elif isinstance(value, Mapping):
            yield from value


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store(tmp_path / "s.db")
    yield db
    db.close()


def commit_and_read_back(db: Store, run_id: int, events: list[RunEvent]) -> None:
    """Commit `events` to an empty store and check it holds every one of them."""
    db.commit_batch(run_id, events, None)
    points = [p for e in events if isinstance(e, MetricsLogged | MetricsBatch) for p in e.points()]
    stored = db.metrics(run_id)
    assert [(p.step, sorted(p.metrics)) for p in stored] == [
        (p.step, sorted(p.metrics)) for p in points
    ]
    others = [e for e in events if isinstance(e, StatusChanged | CheckpointSaved | SourceError)]
    recorded = [event.row for event in db.history()]
    kinds = {StatusChanged: "status", CheckpointSaved: "checkpoint", SourceError: "source_error"}
    assert [row.kind for row in recorded] == [kinds[type(e)] for e in others]
    assert not any(row.summary.startswith("unrecordable") for row in recorded)


@pytest.mark.parametrize("name", PARSERS)
def test_each_parser_hands_on_only_text_the_store_can_hold(name: str, store: Store) -> None:
    events = PARSERS[name]()
    assert events
    for event in events:
        for text in texts(event):
            assert encodes(text), (type(event).__name__, text)
    commit_and_read_back(store, store.ensure_run("/runs/odd", "odd"), events)


def test_the_issue_line_becomes_a_metric_named_by_its_escape() -> None:
    [event, *_] = jsonl_events()
    assert isinstance(event, MetricsLogged)
    assert event.metrics == {"\\ud800": 1.0}
    assert (event.run, event.source) == ("odd-\\udcff", "trainer_log.jsonl\\udcff")


def test_a_status_with_a_lone_surrogate_is_kept_visible() -> None:
    [status, _] = status_events()
    assert isinstance(status, StatusChanged)
    assert status.status == "train\\ud800ing"


def test_the_origin_path_still_opens_the_file_while_locations_are_storable() -> None:
    where = origin("train.log")
    assert where.path == f"{ODD_DIR}/train.log\udcff"  # as the OS spells it
    assert where.at(3) == "/runs/odd-\\udcff/train.log\\udcff:3"


# -- any JSON object, through the JSONL parser, into the store -------------------------------------

keys = any_text | st.sampled_from(["step", "current_steps", "loss", "lr", "eval_loss", "status"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats()
    | any_text
    | st.sampled_from(["1.2", " 3 ", "nan", "-Infinity", "1e-5", "llama"])
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=8,
)
records = st.dictionaries(keys, values, max_size=6).map(lambda r: {"step": 1, **r})


def as_line(record: dict[str, object], ascii_only: bool) -> bytes:
    # ensure_ascii writes a lone surrogate as its \ud800 escape (valid JSON); without it, the
    # surrogate itself reaches the file as bytes that are not UTF-8.
    return json.dumps(record, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@settings(deadline=None, max_examples=200)
@given(st.lists(st.tuples(records, st.booleans()), max_size=20), st.integers(1, 40))
def test_any_json_objects_parse_into_events_the_store_commits(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[tuple[dict[str, object], bool]],
    batch_min_points: int,
) -> None:
    parser = JsonlParser(origin("any.jsonl"), batch_min_points=batch_min_points)
    events = parser.parse([as_line(record, ascii_only) for record, ascii_only in lines], 1)
    for event in events:
        assert all(encodes(text) for text in texts(event))
    db = Store(tmp_path_factory.mktemp("store") / "s.db")
    try:
        commit_and_read_back(db, db.ensure_run("/runs/any", "any"), events)
    finally:
        db.close()
