"""Typed, validated settings loaded from TOML; each mistake becomes one actionable `ConfigError`.

Defaults live in the dataclasses below; the top-level `config.toml` documents the same values
(a test keeps the two equal). Plugins describe their own section with a dataclass and validate it
with `parse_section`, so every section reports errors the same way. A number field that only
works within limits says so in its type, e.g. `interval_s: PositiveFloat` or
`Annotated[float, GreaterThan(0), AtMost(1)]`, and a value outside them is refused by name.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

T = TypeVar("T")

CORE_SECTIONS = ("daemon", "sources", "paths")


class ConfigError(Exception):
    """A configuration mistake: names the file, the key and what was expected."""


# Every number setting is non-negative and finite; these narrow a field further, read by
# `parse_section` from the field's `Annotated` type.
@dataclass(frozen=True, slots=True)
class AtLeast:
    """The smallest value a number setting may take: `Annotated[int, AtLeast(1)]`."""

    minimum: float

    def violation(self, value: float) -> str | None:
        return None if value >= self.minimum else f"must be at least {self.minimum:g}"


@dataclass(frozen=True, slots=True)
class GreaterThan:
    """A bound the setting must exceed: `Annotated[float, GreaterThan(0)]` for an interval."""

    minimum: float

    def violation(self, value: float) -> str | None:
        return None if value > self.minimum else f"must be greater than {self.minimum:g}"


@dataclass(frozen=True, slots=True)
class AtMost:
    """The largest value a number setting may take: `Annotated[float, AtMost(1)]`."""

    maximum: float

    def violation(self, value: float) -> str | None:
        return None if value <= self.maximum else f"must be at most {self.maximum:g}"


Bound = AtLeast | GreaterThan | AtMost

# An interval, timeout or wait whose zero would spin the CPU or never wait at all.
PositiveFloat = Annotated[float, GreaterThan(0)]
# A count or size whose zero would let nothing through (a queue, a window, a line length).
PositiveInt = Annotated[int, AtLeast(1)]


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    runs: tuple[str, ...] = (".",)
    state_dir: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"
    rescan_interval_s: PositiveFloat = 30.0
    watch_step_ms: PositiveInt = 50
    queue_size: PositiveInt = 10_000
    drain_timeout_s: float = 5.0  # 0: stop at once, dropping what plugins still have queued
    downsample_after_days: float = 30.0  # 0: never thin
    downsample_keep_every: PositiveInt = 10


@dataclass(frozen=True, slots=True)
class SourceSettings:
    jsonl_globs: tuple[str, ...] = ("*.jsonl",)
    status_files: tuple[str, ...] = ("training_status.json",)
    csv_globs: tuple[str, ...] = ("metrics.csv", "lightning_logs/*/metrics.csv", "*/metrics.csv")
    text_globs: tuple[str, ...] = ("*.log",)
    # TensorBoard event files: at the top, and in writers' folders up to three deep (HF's
    # runs/<date>_<host>/, Lightning's lightning_logs/version_N/, <save_dir>/<name>/version_N/).
    tensorboard_globs: tuple[str, ...] = (
        "events.out.tfevents.*",
        "*/events.out.tfevents.*",
        "*/*/events.out.tfevents.*",
        "*/*/*/events.out.tfevents.*",
    )
    text_preset: Literal["step_loss", "megatron"] = "step_loss"
    text_regex: str = ""
    max_line_bytes: PositiveInt = 10 * 1024 * 1024
    trainer_state: bool = True


@dataclass(frozen=True, slots=True)
class PathSettings:
    inbox: str = "inbox"
    reports: str = "reports"
    snapshots: str = "snapshots"


@dataclass(frozen=True, slots=True)
class Settings:
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    sources: SourceSettings = field(default_factory=SourceSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    # Raw plugin sections, validated by each plugin with `parse_section` when it loads.
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    origin: str = "<defaults>"

    def state_dir(self) -> Path:
        if self.daemon.state_dir:
            return Path(self.daemon.state_dir).expanduser()
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "tunewatch"

    def state_db(self) -> Path:
        return self.state_dir() / "state.db"


def default_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tunewatch" / "config.toml"


def load_settings(path: Path | None, plugin_names: Iterable[str] = ()) -> Settings:
    """Load `path` (or the user's config file if it exists, else the defaults).

    `plugin_names` are the sections plugins may own; any other unknown section is an error.
    """
    explicit = path is not None
    path = path or default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: config file not found")
        return Settings()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return settings_from_mapping(raw, str(path), plugin_names)


def settings_from_mapping(
    raw: Mapping[str, Any], origin: str, plugin_names: Iterable[str] = ()
) -> Settings:
    allowed = set(CORE_SECTIONS) | set(plugin_names)
    for key, value in raw.items():
        if key not in allowed:
            expected = ", ".join(f"[{name}]" for name in sorted(allowed))
            raise ConfigError(f"{origin}: unknown section [{key}]; expected one of {expected}")
        if not isinstance(value, dict):
            raise ConfigError(f"{origin}: [{key}] must be a table, got {_describe(value)}")
    settings = Settings(
        daemon=parse_section(DaemonSettings, raw.get("daemon", {}), "daemon", origin),
        sources=parse_section(SourceSettings, raw.get("sources", {}), "sources", origin),
        paths=parse_section(PathSettings, raw.get("paths", {}), "paths", origin),
        plugins={k: v for k, v in raw.items() if k not in CORE_SECTIONS},
        origin=origin,
    )
    _check_paths(settings)
    return settings


def parse_section(cls: type[T], table: Mapping[str, Any], section: str, origin: str = "") -> T:
    """Build the dataclass `cls` from a TOML table, rejecting unknown keys, wrong types and
    numbers outside their field's bounds."""
    prefix = f"{origin}: " if origin else ""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{prefix}[{section}] unknown key {key!r}; known keys: {known}")
        try:
            values[key] = _coerce(value, hints[key])
        except _Mismatch as exc:
            raise ConfigError(
                f"{prefix}[{section}] {key}: expected {exc.expected}, got {_describe(value)}"
            ) from None
        except _OutOfRange as exc:
            raise ConfigError(
                f"{prefix}[{section}] {key}: {exc.problem}, got {_shown(value)}"
            ) from None
    return cls(**values)


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


class _OutOfRange(Exception):
    """The right type, but a value the setting cannot work with."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def _coerce(value: Any, hint: Any, *, lower_bounded: bool = False) -> Any:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *metadata = typing.get_args(hint)
        bounds = [m for m in metadata if isinstance(m, Bound)]
        # A field's own lower bound replaces the non-negative rule, so that -1 gets its message.
        lower = any(isinstance(b, AtLeast | GreaterThan) for b in bounds)
        return _within_bounds(_coerce(value, base, lower_bounded=lower), bounds)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch("true or false")
    if hint is int or hint is float:
        return _number(value, hint, lower_bounded)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch("a string")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value
        raise _Mismatch("one of " + ", ".join(repr(c) for c in choices))
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise _Mismatch("a list")
        return tuple(_coerce(v, item) for v in value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option)
            except _Mismatch:
                continue
        raise _Mismatch(" or ".join(_name(o) for o in typing.get_args(hint)))
    if hint is type(None):
        raise _Mismatch("nothing")
    raise _Mismatch(_name(hint))


def _number(value: Any, hint: type[int] | type[float], lower_bounded: bool) -> int | float:
    """`value` as an int or float setting: finite, and non-negative unless the field bounds it."""
    expected = "a non-negative integer" if hint is int else "a non-negative number"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not (is_int or (hint is float and isinstance(value, float))):
        raise _Mismatch(expected)
    try:
        number = hint(value)
    except OverflowError:  # an integer beyond float range
        raise _OutOfRange("must be a finite number") from None
    if not math.isfinite(number):  # TOML has inf and nan: no setting can work with them
        raise _OutOfRange("must be a finite number")
    if number < 0 and not lower_bounded:
        raise _Mismatch(expected)
    return number


def _within_bounds(value: Any, bounds: Iterable[Bound]) -> Any:
    for bound in bounds:
        problem = bound.violation(value)
        if problem is not None:
            raise _OutOfRange(problem)
    return value


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}
    return f"{kind.get(type(value), type(value).__name__)} {_shown(value)}"


def _shown(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _check_paths(settings: Settings) -> None:
    state_dir = settings.state_dir()
    for parent in (state_dir, *state_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"{settings.origin}: [daemon] state_dir: {parent} exists and is not a directory"
                )
            break
    for key in ("inbox", "reports", "snapshots"):
        if not getattr(settings.paths, key):
            raise ConfigError(f"{settings.origin}: [paths] {key}: must not be empty")
    if not settings.daemon.runs:
        raise ConfigError(f"{settings.origin}: [daemon] runs: list at least one run directory")
    if settings.sources.text_regex:
        from tunewatch.daemon.sources.text_regex import TextPattern

        try:
            TextPattern.from_regex(settings.sources.text_regex)
        except ValueError as exc:
            raise ConfigError(f"{settings.origin}: [sources] text_regex: {exc}") from None
