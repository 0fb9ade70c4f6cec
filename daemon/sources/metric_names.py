"""Canonical metric names, and the one place a raw record (JSON, CSV, regex) becomes metrics.

Every trainer spells the same quantity differently (`current_steps`, `lm loss`, `train/lr`...);
detectors and the store only ever see the canonical spelling.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

STEP = "step"

_ALIASES: dict[str, tuple[str, ...]] = {
    STEP: (
        "current_steps",
        "current_step",
        "step",
        "global_step",
        "iteration",
        "iter",
        "it",
        "trainer/global_step",
    ),
    "loss": ("loss", "train_loss", "train/loss", "lm loss", "lm_loss"),
    "eval_loss": (
        "eval_loss",
        "eval/loss",
        "val_loss",
        "val/loss",
        "validation_loss",
        "valid_loss",
    ),
    "learning_rate": ("lr", "learning_rate", "learning rate", "train/learning_rate"),
    "grad_norm": ("grad_norm", "grad norm", "gradient_norm", "train/grad_norm"),
    "accuracy": ("accuracy", "acc", "train_accuracy", "train/accuracy"),
    "eval_accuracy": ("eval_accuracy", "eval_acc", "val_acc", "val_accuracy", "eval/accuracy"),
    "epoch": ("epoch", "train/epoch"),
    # A progress counter rather than a measurement, but kept as a metric so progress is stored.
    "total_steps": ("total_steps", "max_steps", "train_iters"),
}

# Bookkeeping fields trainers log next to metrics: wall clock, progress text, process ids.
# Storing them as metrics would feed detectors with numbers that are not training signals.
_IGNORED = ("percentage", "elapsed_time", "remaining_time", "time", "timestamp", "pid")

# Marks an ignored key in the lookup tables (the empty string is never a real metric name).
_SKIP = ""


def _normalise(raw: str) -> str:
    """Fold case and the `/`, space and `_` spellings of one name together."""
    return "_".join(raw.strip().lower().replace("/", " ").split())


_BY_NORMALISED: dict[str, str] = {
    _normalise(alias): canonical for canonical, aliases in _ALIASES.items() for alias in aliases
}
_BY_NORMALISED.update({name: _SKIP for name in _IGNORED})


@functools.lru_cache(maxsize=4096)
def _resolve(raw: str) -> str:
    """Canonical name for `raw`, or `_SKIP` for a bookkeeping key."""
    return _BY_NORMALISED.get(_normalise(raw), raw)


def canonical_name(raw: str) -> str:
    """The canonical spelling of a metric name; unknown names come back unchanged."""
    return _resolve(raw) or raw


# Non-finite values some writers store as strings; they must survive as floats.
_NON_FINITE_TEXT: dict[str, float] = {
    "nan": math.nan,
    "inf": math.inf,
    "+inf": math.inf,
    "-inf": -math.inf,
    "infinity": math.inf,
    "+infinity": math.inf,
    "-infinity": -math.inf,
}

MAX_STEP = 2**63 - 1  # the store keeps steps in 64-bit integers
_MAX_EXACT_INT = 2**53  # integers up to here convert to float exactly and without overflow


def as_step(value: object) -> int | None:
    """`value` as a step: a non-negative integer (10.0 counts; 10.5, -1 and True do not)."""
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if 0 <= value <= MAX_STEP else None


def as_metric(value: object) -> float | None:
    """`value` as a metric value, by the rules of `split_step`, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return value
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range is, as a metric, infinite
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        return _NON_FINITE_TEXT.get(value.lower())
    return None


def number_from_text(text: str) -> float | None:
    """A number written as text (`1.2e-05`, `35.500`, `nan`, `-inf`), or None."""
    try:
        return float(text)
    except ValueError:
        return None


# What a key layout means: the keys that may hold the step, and (raw key, canonical name) of
# the others that may hold metrics. Records of one log share a layout, so names are resolved
# once per layout instead of once per key per line.
Layout = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]
_LAYOUTS: dict[tuple[str, ...], Layout] = {}
_LAYOUT_LIMIT = 1024


def key_layout(keys: tuple[str, ...]) -> Layout:
    """The step keys and (raw key, canonical name) metric keys of records with these keys."""
    layout = _LAYOUTS.get(keys)
    return _layout(keys) if layout is None else layout


def is_non_finite_text(value: str) -> bool:
    """True for the strings ("nan", "-Infinity"...) that `as_metric` reads as non-finite floats."""
    return value.lower() in _NON_FINITE_TEXT


def _layout(keys: tuple[str, ...]) -> Layout:
    names = [(key, _resolve(key)) for key in keys]
    layout = (
        tuple(key for key, name in names if name == STEP),
        tuple((key, name) for key, name in names if name and name != STEP),
    )
    if len(_LAYOUTS) >= _LAYOUT_LIMIT:  # a log whose keys never repeat must not grow it forever
        _LAYOUTS.clear()
    _LAYOUTS[keys] = layout
    return layout


def split_step(raw: Mapping[str, object]) -> tuple[int | None, dict[str, float]]:
    """Split a raw record into its step and its numeric metrics under canonical names.

    Non-numeric values are dropped, except the strings "nan"/"inf"/"-inf"/"infinity", which
    become floats. NaN and infinities are kept: detecting them is the point. The first key
    spelling a usable step wins; other step spellings are not metrics.
    """
    step_keys, metric_keys = key_layout(tuple(raw))
    step: int | None = None
    for key in step_keys:
        value = raw[key]
        step = value if type(value) is int and 0 <= value <= MAX_STEP else as_step(value)
        if step is not None:
            break
    metrics: dict[str, float] = {}
    for key, name in metric_keys:
        value = raw[key]
        # Exact type checks: this runs for every line of every JSONL log, and bool is an int.
        if type(value) is float:
            metrics[name] = value
        elif type(value) is int and -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:
            metrics[name] = float(value)
        else:
            number = as_metric(value)
            if number is not None:
                metrics[name] = number
    return step, metrics
