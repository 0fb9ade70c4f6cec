"""The daemon's log: on a console, text from logs and file names never reaches the terminal raw."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Literal

import pytest
import structlog

from tunewatch.daemon.logs import configure_logging

TITLE_ESCAPE = "\x1b]0;PWNED\x07"  # would retitle the terminal


@pytest.fixture
def log_setup() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    watchfiles_level = logging.getLogger("watchfiles").level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("watchfiles").setLevel(watchfiles_level)


def log_everything(fmt: Literal["console", "json"]) -> None:
    """Log data-bearing text through structlog and through a library's stdlib logger."""
    configure_logging("info", fmt)
    log = structlog.get_logger("tunewatch.test")
    log.warning(
        f"cannot read {TITLE_ESCAPE}", path=f"/runs/{TITLE_ESCAPE}", spaced=f"a b{TITLE_ESCAPE}"
    )
    try:
        raise ValueError(f"bad line {TITLE_ESCAPE}")
    except ValueError:
        log.exception("crashed", run=f"run{TITLE_ESCAPE}")
        logging.getLogger("somelib").exception("library says %s", TITLE_ESCAPE)


@pytest.mark.usefixtures("log_setup")
def test_console_log_escapes_every_string_and_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    log_everything("console")
    err = capsys.readouterr().err
    assert "\x1b]0;" not in err and "\x07" not in err
    assert "cannot read \\x1b]0;PWNED\\x07" in err
    assert "/runs/\\x1b]0;PWNED\\x07" in err
    assert "ValueError: bad line \\x1b]0;PWNED\\x07" in err
    assert "library says \\x1b]0;PWNED\\x07" in err
    # A traceback keeps its own line breaks.
    assert "Traceback (most recent call last):\n" in err


@pytest.mark.usefixtures("log_setup")
def test_json_log_keeps_the_text_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    log_everything("json")
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err  # JSON escapes them itself
    entries = [json.loads(line) for line in err.splitlines()]
    assert entries[0]["event"] == f"cannot read {TITLE_ESCAPE}"
    assert entries[0]["path"] == f"/runs/{TITLE_ESCAPE}"
    assert f"ValueError: bad line {TITLE_ESCAPE}" in entries[2]["exception"]
