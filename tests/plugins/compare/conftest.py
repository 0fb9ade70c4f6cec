"""Fixtures of the comparison tests: one tiny training run shared by the session, file audits."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.tiny_models import TinySnapshots, make_lora_adapter, train_copy_run

# Every file this process opens while a test listens, from Python's audit hook ("open" covers
# io.open and os.open). A hook cannot be removed, so it is installed once and gated.
_opened: list[str] | None = None


def _record_open(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and _opened is not None and isinstance(args[0], str | Path):
        _opened.append(str(args[0]))


sys.addaudithook(_record_open)


@pytest.fixture
def opened_files() -> Iterator[list[str]]:
    """The paths opened during the test (by any code in this process)."""
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@pytest.fixture(scope="session")
def tiny_snapshots(tmp_path_factory: pytest.TempPathFactory) -> TinySnapshots:
    return train_copy_run(tmp_path_factory.mktemp("copy-run"))


@pytest.fixture(scope="session")
def lora_adapter(tiny_snapshots: TinySnapshots, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("peft")
    return make_lora_adapter(tiny_snapshots.final_model, tmp_path_factory.mktemp("lora") / "lora")
