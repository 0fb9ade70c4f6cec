"""Typed, validated settings loaded from TOML; each mistake becomes one actionable `ConfigError`.

Defaults live in the dataclasses below; the top-level `config.toml` documents the same values
(a test keeps the two equal). Plugins describe their own section with a dataclass and validate it
with `parse_section`, so every section reports errors the same way.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

CORE_SECTIONS = ("daemon", "sources", "paths")


class ConfigError(Exception):
    """A configuration mistake: names the file, the key and what was expected."""


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    runs: tuple[str, ...] = (".",)
    state_dir: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"
    rescan_interval_s: float = 30.0
    watch_step_ms: int = 50
    queue_size: int = 10_000
    drain_timeout_s: float = 5.0
    downsample_after_days: float = 30.0
    downsample_keep_every: int = 10


@dataclass(frozen=True, slots=True)
class SourceSettings:
    jsonl_globs: tuple[str, ...] = ("*.jsonl",)
    status_files: tuple[str, ...] = ("training_status.json",)
    csv_globs: tuple[str, ...] = ("metrics.csv", "lightning_logs/*/metrics.csv", "*/metrics.csv")
    text_globs: tuple[str, ...] = ("*.log",)
    text_preset: Literal["step_loss", "megatron"] = "step_loss"
    text_regex: str = ""
    max_line_bytes: int = 10 * 1024 * 1024
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
    """Build the dataclass `cls` from a TOML table, rejecting unknown keys and wrong types."""
    prefix = f"{origin}: " if origin else ""
    hints = typing.get_type_hints(cls)
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
    return cls(**values)


class _Mismatch(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise _Mismatch("a non-negative integer")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        raise _Mismatch("a non-negative number")
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


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{kind.get(type(value), type(value).__name__)} {shown}"


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
    if settings.daemon.downsample_after_days < 0 or settings.daemon.downsample_keep_every < 1:
        raise ConfigError(
            f"{settings.origin}: [daemon] downsample_after_days must be >= 0 (0 keeps every point)"
            " and downsample_keep_every >= 1"
        )
    if settings.sources.text_regex:
        from tunewatch.daemon.sources.text_regex import TextPattern

        try:
            TextPattern.from_regex(settings.sources.text_regex)
        except ValueError as exc:
            raise ConfigError(f"{settings.origin}: [sources] text_regex: {exc}") from None
