"""Logging setup: readable console lines on a terminal, JSON lines otherwise (journald-friendly)."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

from tunewatch.daemon.text import printable, printable_lines

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Multi-line values the console renderer prints below the line: their line breaks are real.
_MULTI_LINE_KEYS = frozenset({"exception", "stack"})


def escape_for_terminal(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Make every string of an entry printable: file names and log text are data, not escapes.

    Other values need nothing: the console renderer shows them by repr(), which escapes them.
    """
    return {key: _printable_value(key, value) for key, value in event_dict.items()}


def _printable_value(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return printable_lines(value) if key in _MULTI_LINE_KEYS else printable(value)


def configure_logging(
    level: str = "info", fmt: Literal["auto", "console", "json"] = "auto"
) -> None:
    """Route structlog (and the stdlib loggers of libraries) to stderr in one format."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    # JSON escapes control characters by itself; the console renderer prints strings as they are.
    rendering: list[structlog.types.Processor] = (
        [escape_for_terminal, structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
        if use_console
        else [structlog.processors.JSONRenderer()]
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # A library's traceback as text, so that it is escaped like the rest.
                structlog.processors.format_exc_info,
                *rendering,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # watchfiles logs every batch of changes at INFO; that is noise in a daemon's journal.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    # APScheduler says at info level each time it adds or runs a job: noise in a person's view.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
