"""Parser for plain-text training logs, driven by a `TextPattern` (a preset or a user's regex).

Plain logs are mostly other output, so lines a pattern does not match are ignored silently.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tunewatch.daemon.events import MetricsLogged, RunEvent, SourceError
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.metric_names import (
    STEP,
    STEP_OUT_OF_RANGE,
    number_from_text,
    out_of_range_step,
    split_step,
)

# A number as trainers print it: 12, 1.5, .5, 1.2e-05, 8.560737E+00, nan, inf, -Infinity.
_NUMBER = r"[-+]?(?:nan|inf(?:inity)?|(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)"
# An integer that may have thousands separators: 18,500.
_COUNT = r"\d{1,3}(?:,\d{3})+(?!\d)|\d+"
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d*)?")


@dataclass(frozen=True, slots=True)
class TextPattern:
    """How to read metrics from a line.

    `line` is searched for in each line; a line it does not find is skipped. Its named groups
    become fields: `step` (required) and metrics named by the group. When `pairs` is set, it is
    then matched repeatedly over the rest of the line, each match's `name` and `value` groups
    adding one metric, for logs that print a variable list of `name: value` pairs.
    """

    line: re.Pattern[str]
    pairs: re.Pattern[str] | None = None

    def __post_init__(self) -> None:
        if STEP not in self.line.groupindex:
            raise ValueError(
                f"pattern {self.line.pattern!r} needs a named group for the step, "
                "e.g. (?P<step>\\d+)"
            )
        if self.pairs is not None and not {"name", "value"} <= self.pairs.groupindex.keys():
            raise ValueError(f"pairs pattern {self.pairs.pattern!r} needs groups name and value")

    @classmethod
    def from_regex(cls, regex: str) -> TextPattern:
        """A pattern from a user's regex: group `step`, other named groups are metrics."""
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            raise ValueError(f"invalid regex {regex!r}: {exc}") from exc
        return cls(compiled)

    def fields(self, text: str) -> dict[str, str] | None:
        """The raw name -> text of each field found in `text`, or None if it does not match."""
        found = self.line.search(text)
        if found is None:
            return None
        fields = {name: value for name, value in found.groupdict().items() if value is not None}
        if self.pairs is not None:
            for pair in self.pairs.finditer(text, found.end()):
                fields.setdefault(pair["name"].strip(), pair["value"])
        return fields


PRESETS: dict[str, TextPattern] = {
    # `Step 18,500: loss=1.2345`, `step 120/1000 | loss: 2.31 | lr: 3e-5 | grad_norm=0.8`.
    # A value must end the token, so `eta: 0:01:00` or `took: 3.2s` are not metrics.
    "step_loss": TextPattern(
        re.compile(
            rf"\bstep\b\s*[:=#]?\s*(?P<step>{_COUNT})(?:\s*/\s*(?P<total_steps>{_COUNT}))?",
            re.IGNORECASE,
        ),
        re.compile(
            rf"(?P<name>[a-z_][\w./-]*)\s*[:=]\s*(?P<value>{_NUMBER})(?![\w.:])", re.IGNORECASE
        ),
    ),
    # Megatron-LM: ` iteration      427/    5000 | consumed samples: 13664 | ... | lm loss: ...`
    "megatron": TextPattern(
        re.compile(r"\biteration\s+(?P<step>\d+)\s*/\s*(?P<total_steps>\d+)"),
        re.compile(rf"\|\s*(?P<name>[^|:]+?)\s*:\s*(?P<value>{_NUMBER})\s*(?=\||$)", re.IGNORECASE),
    ),
}


class TextLogParser:
    """Turns each line of a plain-text log that the pattern finds into one `MetricsLogged`."""

    header_lines = 0
    rewrite_keeps_rows = False

    def __init__(
        self, origin: FileOrigin, pattern: TextPattern, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._origin = origin
        self._pattern = pattern
        self._clock = clock

    def parse(self, lines: Sequence[bytes], first_line_no: int) -> list[RunEvent]:
        now = self._clock()
        events: list[RunEvent] = []
        for line_no, line in enumerate(lines, first_line_no):
            event = self._parse_line(line, line_no, now)
            if event is not None:
                events.append(event)
        return events

    def _parse_line(self, line: bytes, line_no: int, now: float) -> RunEvent | None:
        # A log is not data: a stray bad byte must not hide the numbers around it.
        fields = self._pattern.fields(line.decode("utf-8", "replace").rstrip())
        if fields is None:
            return None
        numbers = _numbers(fields)
        step, metrics = split_step(numbers)
        origin = self._origin
        if step is None:
            # The pattern found a step on this line: an absurd one is an error, not other output.
            out_of_range = out_of_range_step(numbers)
            if out_of_range is None:
                return None
            kind, location = STEP_OUT_OF_RANGE, origin.at(line_no)
            return SourceError(origin.run, origin.source, kind, out_of_range, location)
        if not metrics:
            return None
        return MetricsLogged(origin.run, step, metrics, origin.source, now)


def _numbers(fields: dict[str, str]) -> dict[str, float]:
    """The fields whose text is a number (thousands separators allowed), as floats."""
    numbers: dict[str, float] = {}
    for name, text in fields.items():
        if _THOUSANDS.fullmatch(text):
            text = text.replace(",", "")
        number = number_from_text(text)
        if number is not None:
            numbers[name] = number
    return numbers
