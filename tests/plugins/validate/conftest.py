"""Helpers to write small data files for the validation tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import pytest


class WriteRows(Protocol):
    def __call__(self, rows: list[Any], name: str = ...) -> Path: ...


@pytest.fixture
def write_jsonl(tmp_path: Path) -> WriteRows:
    def write(rows: list[Any], name: str = "data.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return path

    return write
