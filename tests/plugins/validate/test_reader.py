"""The reader streams JSONL and JSON arrays, reporting bad rows by number and never crashing."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tunewatch.plugins.validate import reader
from tunewatch.plugins.validate.reader import Record, read_records


def _read(data: bytes) -> list[Record]:
    return list(read_records(io.BytesIO(data)))


def test_jsonl_rows_keep_their_line_numbers_and_blank_lines_are_skipped() -> None:
    records = _read(b'{"a": 1}\n\n{"a": 2}\n')
    assert [(r.line, r.value) for r in records] == [(1, {"a": 1}), (3, {"a": 2})]


def test_bad_json_and_bad_utf8_are_reported_on_their_line() -> None:
    records = _read(b'{"a": 1}\n{"a": \n{"a": "\xff\xfe"}\n{"a": 4}')
    assert [(r.line, r.error) for r in records] == [
        (1, None),
        (2, "invalid_json"),
        (3, "invalid_utf8"),
        (4, None),
    ]


def test_a_utf8_bom_is_ignored_in_both_containers() -> None:
    assert _read(b'\xef\xbb\xbf{"a": 1}\n')[0].value == {"a": 1}
    assert _read(b'\xef\xbb\xbf [{"a": 1}]')[0].value == {"a": 1}


def test_json_array_elements_are_numbered_and_a_broken_one_does_not_stop_the_rest() -> None:
    records = _read(b'[{"a": 1}, {"a": [1,, 2], "b": x}, {"a": 3}]')
    assert [(r.line, r.error) for r in records] == [(1, None), (2, "invalid_json"), (3, None)]
    assert records[2].value == {"a": 3}


def test_array_elements_larger_than_a_chunk_are_read_whole(monkeypatch: Any) -> None:
    monkeypatch.setattr(reader, "CHUNK_BYTES", 7)
    rows = [{"text": "x" * 50, "n": i} for i in range(5)]
    assert [r.value for r in _read(json.dumps(rows).encode())] == rows


def test_invalid_utf8_inside_an_array_element_is_reported() -> None:
    records = _read(b'[{"a": "ok"}, {"a": "\xff"}]')
    assert [r.error for r in records] == [None, "invalid_utf8"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    for record in _read(data):
        assert record.line >= 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_a_bracket_never_crash(data: bytes) -> None:
    _read(b"[" + data)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)
_OBJECTS = st.lists(st.dictionaries(st.text(), _JSON, max_size=4), max_size=8)


@settings(max_examples=100, deadline=None)
@given(_OBJECTS)
def test_objects_round_trip_as_jsonl(rows: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    assert [r.value for r in _read(data)] == rows


@settings(max_examples=100, deadline=None)
@given(_OBJECTS, st.sampled_from([None, 2]))
def test_objects_round_trip_as_a_json_array(rows: list[dict[str, Any]], indent: int | None) -> None:
    data = json.dumps(rows, ensure_ascii=False, indent=indent).encode()
    assert [r.value for r in _read(data)] == rows
