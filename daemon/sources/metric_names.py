"""Canonical metric names, and the one place a raw record (JSON, CSV, regex) becomes metrics.

Every trainer spells the same quantity differently (`current_steps`, `lm loss`, `train/lr`...);
detectors and the store only ever see the canonical spelling.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

from tunewatch.daemon.text import storable_text

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
    # Lightning suffixes `_step` and `_epoch` to a name logged with on_step and on_epoch both.
    "loss": (
        "loss",
        "train_loss",
        "train/loss",
        "lm loss",
        "lm_loss",
        "train_loss_step",
        "loss_step",
    ),
    # An epoch average: judged as `loss`, it would be a fake drop at the end of each epoch.
    "train_loss_epoch": ("train_loss_epoch", "loss_epoch"),
    "eval_loss": (
        "eval_loss",
        "eval/loss",
        "val_loss",
        "val/loss",
        "validation_loss",
        "valid_loss",
        "val_loss_epoch",
    ),
    "learning_rate": ("lr", "learning_rate", "learning rate", "train/learning_rate"),
    "grad_norm": ("grad_norm", "grad norm", "gradient_norm", "train/grad_norm"),
    "accuracy": (
        "accuracy",
        "acc",
        "train_accuracy",
        "train/accuracy",
        "train_acc_step",
        "acc_step",
    ),
    "eval_accuracy": (
        "eval_accuracy",
        "eval_acc",
        "val_acc",
        "val_accuracy",
        "eval/accuracy",
        "val_acc_epoch",
        "validation_accuracy",
    ),
    # transformers' end-of-training summary under rewrite_logs (TensorBoard, W&B): the run's
    # average loss, not a step's (`_resolve` would otherwise read it as `train_loss`).
    "train/train_loss": ("train/train_loss",),
    "epoch": ("epoch", "train/epoch"),
    # A progress counter rather than a measurement, but kept as a metric so progress is stored.
    "total_steps": ("total_steps", "max_steps", "train_iters"),
}

# Bookkeeping fields trainers log next to metrics: wall clock, progress text, process ids.
# Storing them as metrics would feed detectors with numbers that are not training signals.
# Lightning's TensorBoard logger writes `hp_metric` = -1 as a placeholder for hparams.
_IGNORED = (
    "percentage",
    "elapsed_time",
    "remaining_time",
    "time",
    "timestamp",
    "pid",
    "hp_metric",
)

# Marks an ignored key in the lookup tables (the empty string is never a real metric name).
_SKIP = ""


def _normalise(raw: str) -> str:
    """Fold case and the `/`, space and `_` spellings of one name together."""
    return "_".join(raw.strip().lower().replace("/", " ").split())


_BY_NORMALISED: dict[str, str] = {
    _normalise(alias): canonical for canonical, aliases in _ALIASES.items() for alias in aliases
}
_BY_NORMALISED.update({name: _SKIP for name in _IGNORED})


# transformers' rewrite_logs (its TensorBoard and W&B callbacks, and logs exported from them)
# writes the Trainer's `x` as `train/x` and `eval_x`, `test_x` as `eval/x`, `test/x`: a prefix
# read back gives the Trainer's own name (`train/rewards/chosen` is TRL's `rewards/chosen`).
_TRAINER_PREFIXES = {"train": "", "eval": "eval_", "test": "test_"}


@functools.lru_cache(maxsize=4096)
def _resolve(raw: str) -> str:
    """Canonical name for `raw`, or `_SKIP` for a bookkeeping key."""
    known = _BY_NORMALISED.get(_normalise(raw))
    if known is not None:
        return known
    prefix, slash, rest = raw.partition("/")
    written_as = _TRAINER_PREFIXES.get(prefix.strip().lower())
    if not slash or written_as is None or not rest.strip():
        return raw
    return _resolve(written_as + rest)


def canonical_name(raw: str) -> str:
    """The canonical spelling of a metric name; unknown names come back unchanged."""
    return _resolve(raw) or raw


def metric_name(raw: str) -> str | None:
    """The canonical, storable name of a metric under the key `raw`; None when the key holds a
    step or bookkeeping instead (a TensorBoard tag, where every key stands alone)."""
    name = _resolve(raw)
    return None if name in (_SKIP, STEP) else storable_text(name)


# No fine-tuning run takes a billion optimizer steps (pre-training the largest models takes about
# a million). A larger step is a writer's bug, and taken as data it would stand as the run's
# latest step for good, so every later point would look old: it is a source error instead.
MAX_SANE_STEP = 10**9
STEP_OUT_OF_RANGE = "step_out_of_range"  # the SourceError kind
_MAX_EXACT_INT = 2**53  # integers up to here convert to float exactly and without overflow


def as_step(value: object) -> int | None:
    """`value` as a step: an integer from 0 to MAX_SANE_STEP (10.0 and "10" count; 10.5, -1 and
    True do not)."""
    whole = _whole_number(value)
    return whole if whole is not None and whole <= MAX_SANE_STEP else None


def _whole_number(value: object) -> int | None:
    """`value` as a non-negative integer of any size, or None."""
    if isinstance(value, str):
        value = number_from_text(value)
    if isinstance(value, float):
        if not value.is_integer():  # NaN and infinities are not either
            return None
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    return value if value >= 0 else None


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
        return number_from_text(value)
    return None


def number_from_text(text: str) -> float | None:
    """A number written as text (`1.2e-05`, ` 35.500 `, `nan`, `-Infinity`), or None."""
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


def _layout(keys: tuple[str, ...]) -> Layout:
    # Names become stored text: a lone surrogate in a key (valid JSON) must not reach the store.
    names = [(key, storable_text(_resolve(key))) for key in keys]
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

    A metric is a number, or text that spells one ("1.2", "1e-5", "nan", "-Infinity"): some
    writers quote their numbers. Other values (words, null, lists) are not metrics and are
    dropped. NaN and infinities are kept: detecting them is the point. The first key spelling
    a usable step wins; other step spellings are not metrics. A record whose step is out of
    range has none (`out_of_range_step` says why).
    """
    step_keys, metric_keys = key_layout(tuple(raw))
    step: int | None = None
    for key in step_keys:
        value = raw[key]
        step = value if type(value) is int and 0 <= value <= MAX_SANE_STEP else as_step(value)
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


def out_of_range_step(raw: Mapping[str, object]) -> str | None:
    """Why `raw` has no step when one of its step keys holds a step beyond MAX_SANE_STEP.

    None when no step key does. Parsers ask this only of a record `split_step` gave no step,
    to report a `STEP_OUT_OF_RANGE` error instead of a missing step.
    """
    step_keys, _ = key_layout(tuple(raw))
    for key in step_keys:
        whole = _whole_number(raw[key])
        if whole is not None and whole > MAX_SANE_STEP:
            shown = repr(raw[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            return storable_text(
                f"{key} {shown} is beyond {MAX_SANE_STEP:,}, more optimizer steps than any "
                "fine-tuning run takes: not a step, so this record is skipped"
            )
    return None
