"""Detector quality: recall, detection delay, precision and false alerts of the anomaly detectors.

Labelled cases: synthetic fine-tuning logs (tests/fixtures/loss_curves.py: warm-up, decay,
batch noise for batch sizes 1-64, evaluation every N steps) with one injected anomaly each, clean
synthetic logs, and real tiny `transformers.Trainer` runs where the anomaly happens for real (a
learning-rate blow-up, a blow-up to NaN, training data switched to random tokens, overfitting).
Every alert is counted after the same `AlertGate`, i.e. what a person would receive, for
tunewatch's detectors and, in the same run, for two baselines: Axolotl's loss watchdog (loss
above 5.0 for 3 logs, plus a NaN check) and a plain 3-sigma z-score on the loss.
The same run replays the real-run corpus (bench/corpus: public training logs labelled by hand
by the rules in bench/corpus/LABELLING.md) through tunewatch's own parsers, with the same
baselines; `--only-corpus` replays it alone, `--no-corpus` skips it.

Run: .venv/bin/python bench/anomaly_quality.py [--seeds heldout|dev] [--cases N] [--no-real]
Defaults were tuned on `--seeds dev`; the reported figures use the held-out seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import machine_description, markdown_table, say
from fixtures.loss_curves import CurveSpec, Row, clean_rows, random_spec

from tunewatch.daemon.events import MetricsEvent
from tunewatch.daemon.sources.base import FileOrigin
from tunewatch.daemon.sources.hf_trainer import TrainerStateParser
from tunewatch.daemon.sources.jsonl import JsonlParser
from tunewatch.daemon.sources.lightning_csv import LightningCsvParser
from tunewatch.daemon.sources.metric_names import canonical_name, split_step
from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.config import AnomalyConfig
from tunewatch.plugins.anomaly.gate import Alert, AlertGate, RunDetectors
from tunewatch.plugins.anomaly.rolling import RollingWindow, mean_std
from tunewatch.plugins.anomaly.timeline import StepTimeline

KINDS = ("non_finite", "loss_spike", "divergence", "inverted_loss", "zscore", "accuracy_drop")
SEED_BASES = {"dev": 1_000, "heldout": 2_000}
# Real runs: (training seed, step at which the anomaly is caused), disjoint between the sets.
REAL_SEEDS = {"dev": ((0, 60), (1, 90)), "heldout": ((2, 70), (3, 100), (4, 55))}


# -- labelled cases ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Label:
    """An anomaly of `kind`, visible from step `onset`; alerts up to `until` are caused by it.

    `cause` is the step where it was caused when that is earlier than its first visible effect
    (an evaluation run right after the faulty step already sees it).
    """

    kind: str
    metric: str  # the metric whose logged points measure the detection delay
    onset: int
    until: int
    variant: str
    cause: int | None = None


@dataclass(slots=True)
class Case:
    name: str
    family: str  # "synthetic", "clean" or "real"
    points: list[Point]
    labels: list[Label] = field(default_factory=list)


def _train(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if "loss" in r.metrics]


def _onset_index(rows: Sequence[Row], rng: random.Random, lo: float, hi: float) -> int:
    """A train row between `lo` and `hi` of the run, after the warm-up, 30 rows before the end."""
    train = _train(rows)
    first = max(int(len(train) * lo), 40)
    last = min(int(len(train) * hi), len(train) - 30)
    return rows.index(train[rng.randrange(first, max(first + 1, last))])


def _until_end(rows: Sequence[Row]) -> int:
    return rows[-1].step


def _rows_after(rows: Sequence[Row], index: int, count: int, metric: str) -> int:
    """The step of the `count`-th row carrying `metric` after `index` (or the last row's)."""
    seen = 0
    for row in rows[index + 1 :]:
        if metric in row.metrics:
            seen += 1
            if seen >= count:
                return row.step
    return rows[-1].step


def inject_non_finite(rows: list[Row], spec: CurveSpec, rng: random.Random) -> Label:
    i = _onset_index(rows, rng, 0.1, 0.9)
    onset = rows[i].step
    variants = ["loss_nan", "grad_nan_hf", "grad_inf_once"]
    if spec.eval_every:
        variants.append("eval_nan")
    variant = rng.choice(variants)
    if variant == "eval_nan":
        evals = [j for j, r in enumerate(rows) if "eval_loss" in r.metrics and j >= i]
        if evals:
            i, onset = evals[0], rows[evals[0]].step
            for r in rows[i:]:
                if "eval_loss" in r.metrics:
                    r.metrics["eval_loss"] = math.nan
            return Label("non_finite", "eval_loss", onset, _until_end(rows), variant)
        variant = "loss_nan"
    if variant == "grad_inf_once":
        # fp16 loss scaling overflowing once: the step is skipped, the run goes on.
        rows[i].metrics["grad_norm"] = math.inf
        return Label("non_finite", "grad_norm", onset, _rows_after(rows, i, 3, "loss"), variant)
    for r in rows[i:]:
        if "eval_loss" in r.metrics:
            r.metrics["eval_loss"] = math.nan
            continue
        r.metrics["grad_norm"] = math.nan
        # Hugging Face's logging_nan_inf_filter hides a NaN loss: it logs 0.0 instead.
        r.metrics["loss"] = math.nan if variant == "loss_nan" else 0.0
    metric = "loss" if variant == "loss_nan" else "grad_norm"
    return Label("non_finite", metric, onset, _until_end(rows), variant)


def inject_spike(rows: list[Row], spec: CurveSpec, rng: random.Random) -> Label:
    i = _onset_index(rows, rng, 0.1, 0.95)
    factor = math.exp(rng.uniform(math.log(3.0), math.log(20.0)))
    length = 1 if rng.random() < 0.7 else rng.randint(2, 3)
    hit = [r for r in rows[i:] if "loss" in r.metrics][:length]
    for r in hit:
        # A bad batch moves the gradient too, by less than the loss.
        r.metrics["loss"] *= factor * rng.uniform(0.8, 1.2)
        r.metrics["grad_norm"] *= math.sqrt(factor)
    variant = f"x{factor:.0f} over {length} point{'s' * (length > 1)}"
    return Label("loss_spike", "loss", rows[i].step, _rows_after(rows, i, 5, "loss"), variant)


def inject_divergence(rows: list[Row], spec: CurveSpec, rng: random.Random) -> Label:
    i = _onset_index(rows, rng, 0.1, 0.8)
    onset = rows[i].step
    shape = rng.choice(("jump", "ramp"))
    top = math.exp(rng.uniform(math.log(2.0), math.log(30.0)))
    rate = math.exp(rng.uniform(math.log(0.03), math.log(0.3)))
    n = 0
    for r in rows[i:]:
        if "loss" in r.metrics:
            n += 1
        factor = top if shape == "jump" else min(top, math.exp(rate * n))
        for metric in ("loss", "eval_loss"):
            if metric in r.metrics:
                r.metrics[metric] *= factor
        if "grad_norm" in r.metrics:
            r.metrics["grad_norm"] *= math.sqrt(factor)
    variant = f"jump x{top:.0f}" if shape == "jump" else f"ramp {rate:.0%}/point"
    return Label("divergence", "loss", onset, _until_end(rows), variant)


def inject_inverted(rows: list[Row], spec: CurveSpec, rng: random.Random) -> Label:
    if spec.preference and rng.random() < 0.5:
        i = _onset_index(rows, rng, 0.2, 0.9)
        for r in rows[i:]:
            if "rewards/chosen" in r.metrics:
                m = r.metrics
                m["rewards/chosen"], m["rewards/rejected"] = (
                    m["rewards/rejected"],
                    m["rewards/chosen"],
                )
        return Label("inverted_loss", "rewards/chosen", rows[i].step, _until_end(rows), "rewards")
    evals = [j for j, r in enumerate(rows) if "eval_loss" in r.metrics]
    k = rng.randrange(3, max(4, min(int(len(evals) * 0.6), len(evals) - 8)))
    i = evals[k]
    base, rate = rows[i].metrics["eval_loss"], rng.uniform(0.01, 0.05)
    for n, j in enumerate(evals[k + 1 :], start=1):
        rows[j].metrics["eval_loss"] = base * (1.0 + rate * n) * rng.uniform(0.997, 1.003)
    variant = f"eval +{rate:.0%}/eval"
    return Label("inverted_loss", "eval_loss", rows[i].step, _until_end(rows), variant)


def inject_grad_outlier(rows: list[Row], spec: CurveSpec, rng: random.Random) -> Label:
    i = _onset_index(rows, rng, 0.1, 0.95)
    factor = math.exp(rng.uniform(math.log(5.0), math.log(50.0)))
    rows[i].metrics["grad_norm"] *= factor
    return Label(
        "zscore", "grad_norm", rows[i].step, _rows_after(rows, i, 3, "loss"), f"x{factor:.0f}"
    )


def inject_accuracy_drop(rows: list[Row], spec: CurveSpec, rng: random.Random) -> Label:
    i = _onset_index(rows, rng, 0.1, 0.8)
    drop = rng.uniform(10.0, 30.0) / (1.0 if spec.percent else 100.0)
    for r in rows[i:]:
        for metric in ("accuracy", "eval_accuracy"):
            if metric in r.metrics:
                r.metrics[metric] = max(0.0, r.metrics[metric] - drop)
    unit = " points" if spec.percent else ""
    variant = f"-{drop:.3g}{unit}"
    return Label("accuracy_drop", "accuracy", rows[i].step, _until_end(rows), variant)


Injector = Callable[[list[Row], CurveSpec, random.Random], Label]
INJECTORS: dict[str, tuple[Injector, dict[str, Any]]] = {
    "non_finite": (inject_non_finite, {}),
    "loss_spike": (inject_spike, {}),
    "divergence": (inject_divergence, {}),
    "inverted_loss": (inject_inverted, {"eval_every": None}),
    "zscore": (inject_grad_outlier, {}),
    "accuracy_drop": (inject_accuracy_drop, {"accuracy": True}),
}


def synthetic_cases(seed_base: int, per_kind: int, clean: int) -> list[Case]:
    cases: list[Case] = []
    for k, (kind, (inject, needs)) in enumerate(INJECTORS.items()):
        for n in range(per_kind):
            rng = random.Random(seed_base * 7919 + k * 1_000_003 + n)
            overrides: dict[str, Any] = {"accuracy": True} if needs.get("accuracy") else {}
            if "eval_every" in needs:
                overrides["eval_every"] = rng.choice((25, 50, 100))
            spec = random_spec(rng, **overrides)
            if spec.steps // spec.log_every < 150 or (
                spec.eval_every and spec.steps // spec.eval_every < 12
            ):
                # Room around the anomaly: a warm-up before it, enough points after it.
                spec = replace(
                    spec,
                    log_every=1,
                    eval_every=spec.eval_every and min(spec.eval_every, spec.steps // 12),
                )
            rows = clean_rows(spec)
            label = inject(rows, spec, rng)
            name = f"synthetic/{kind}/{n} (batch {spec.batch_size}, log every {spec.log_every})"
            cases.append(Case(name, "synthetic", [r.point() for r in rows], [label]))
    for n in range(clean):
        rng = random.Random(seed_base * 104_729 + n)
        spec = random_spec(rng)
        points = [r.point() for r in clean_rows(spec)]
        cases.append(Case(f"clean/{n} (batch {spec.batch_size})", "clean", points))
    return cases


# -- real runs -----------------------------------------------------------------------------------


def real_cases(seeds: Iterable[tuple[int, int]]) -> list[Case]:
    """Tiny Trainer runs on CPU where the anomaly is caused for real (a few seconds each)."""
    import transformers
    from fixtures.tiny_training import LrBlowUpCallback, train_tiny_run

    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    cases: list[Case] = []
    for seed, at in seeds:
        with tempfile.TemporaryDirectory() as tmp:

            def run(name: str, *, base: Path = Path(tmp), seed: int = seed, **kwargs: Any) -> Any:
                started = time.perf_counter()
                # With tqdm off, the Trainer prints every log line (and saving draws a progress
                # bar): keep stdout for the report and stderr for progress.
                with (
                    contextlib.redirect_stdout(io.StringIO()),
                    contextlib.redirect_stderr(io.StringIO()),
                ):
                    result = train_tiny_run(base / name, save_steps=10_000, seed=seed, **kwargs)
                say(f"  real run {name} (seed {seed}): {time.perf_counter() - started:.1f} s")
                return result.log_history

            # The learning rate changes at the start of step `at`, after that step's batch was
            # drawn; its effect first shows in the loss logged for step `at + 1`.
            hit = at + 1
            blowup = run(
                "lr-blowup",
                max_steps=at + 60,
                eval_steps=10,
                callbacks=[LrBlowUpCallback(at, 1000.0)],
            )
            cases.append(
                _real_case(
                    f"real/lr x1000 at {at} (seed {seed})",
                    blowup,
                    [
                        Label("divergence", "loss", hit, at + 60, "lr x1000", cause=at),
                        Label("loss_spike", "loss", hit, hit + 5, "lr x1000", cause=at),
                    ],
                )
            )
            nan = run(
                "lr-nan", max_steps=at + 30, eval_steps=10, callbacks=[LrBlowUpCallback(at, 1e30)]
            )
            first = _first_non_finite(nan)
            cases.append(
                _real_case(
                    f"real/lr x1e30 -> NaN at {at} (seed {seed})",
                    nan,
                    [
                        Label("non_finite", "grad_norm", first, at + 30, "NaN grad_norm", cause=at),
                    ],
                )
            )
            corrupt = run(
                "corrupt",
                max_steps=at + 60,
                eval_steps=10,
                callbacks=[random_tokens_callback(at, seed)],
            )
            cases.append(
                _real_case(
                    f"real/random tokens from {at} (seed {seed})",
                    corrupt,
                    [
                        Label("divergence", "loss", hit, at + 60, "random tokens", cause=at),
                    ],
                )
            )
            overfit = run("overfit", max_steps=300, eval_steps=20)
            cases.append(
                _real_case(
                    f"real/300 steps, overfits (seed {seed})", overfit, _overfit_labels(overfit)
                )
            )
            clean = run("clean", max_steps=100, eval_steps=10, learning_rate=2e-3)
            cases.append(_real_case(f"real/clean 100 steps (seed {seed})", clean, []))
    return cases


def random_tokens_callback(at_step: int, seed: int) -> Any:
    """A Trainer callback that replaces every training block with random tokens at `at_step`.

    Built by a function so that transformers is only imported when real runs are asked for.
    """
    from fixtures.tiny_training import VOCAB_SIZE
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            loader = kwargs.get("train_dataloader")
            if state.global_step + 1 != at_step or loader is None:
                return
            rng = random.Random(seed)
            # The fixture's dataset serves these lists on every epoch: corrupt them in place.
            for block in loader.dataset._blocks:
                block[:] = [rng.randrange(4, VOCAB_SIZE) for _ in block]

    return _Callback()


def _real_case(name: str, history: list[dict[str, Any]], labels: list[Label]) -> Case:
    """The run's log history as points, 2 s apart: a fine-tuning pace, which the gate's
    cooldown depends on (the tiny model itself trains a hundred steps a second)."""
    points: list[Point] = []
    for entry in history:
        if "step" not in entry or not ({"loss", "eval_loss"} & entry.keys()):
            continue  # the final train summary has neither
        metrics = {
            canonical_name(k): float(v)
            for k, v in entry.items()
            if k != "step" and isinstance(v, int | float)
        }
        points.append(Point(int(entry["step"]), metrics, 1_700_000_000.0 + 2.0 * entry["step"]))
    return Case(name, "real" if labels else "clean-real", points, labels)


def _first_non_finite(history: list[dict[str, Any]]) -> int:
    for entry in history:
        if any(isinstance(v, float) and not math.isfinite(v) for v in entry.values()):
            return int(entry["step"])
    raise RuntimeError("the NaN run produced no NaN")


def _overfit_labels(history: list[dict[str, Any]]) -> list[Label]:
    evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e]
    best_step, best = min(evals, key=lambda e: e[1])
    if evals[-1][1] < best * 1.02:
        return []  # this seed did not overfit visibly: a clean run
    return [Label("inverted_loss", "eval_loss", best_step, evals[-1][0], "eval rises")]


# -- systems -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alerted:
    index: int  # position of the point in the case
    kind: str
    metric: str
    push: bool = True  # whether a person is told (see `pushed`)


def pushed(alert: Alert) -> bool:
    """Whether an alert reaches a person: the gate's push flag, and never the `info` tier."""
    return alert.push and alert.finding.severity != "info"


class System:
    name = ""

    def alerts(self, points: Sequence[Point]) -> list[Alerted]:
        raise NotImplementedError


class Tunewatch(System):
    name = "tunewatch"

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config

    def alerts(self, points: Sequence[Point]) -> list[Alerted]:
        run = RunDetectors(self.config)
        out: list[Alerted] = []
        for i, point in enumerate(points):
            out.extend(_alerted(i, run.update(point).alerts))
        if points:
            out.extend(_alerted(len(points) - 1, run.end(points[-1].step, points[-1].time)))
        return out


def _alerted(index: int, alerts: Iterable[Alert]) -> list[Alerted]:
    return [Alerted(index, a.finding.kind, a.finding.metric, pushed(a)) for a in alerts]


class _Gated(System):
    """A baseline's findings through the same gate as tunewatch's."""

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config

    def findings(self, point: Point) -> list[Finding]:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def alerts(self, points: Sequence[Point]) -> list[Alerted]:
        self.reset()
        c = self.config
        gate = AlertGate(
            quiet_points=c.quiet_points,
            quiet_eval_points=c.quiet_eval_points,
            cooldown_s=c.cooldown_s,
        )
        out: list[Alerted] = []
        for i, point in enumerate(points):
            out.extend(_alerted(i, gate.update(point, self.findings(point))[0]))
        return out


def _finding(kind: str, metric: str, value: float, point: Point) -> Finding:
    return Finding(kind, "critical", metric, value, None, "", point.step)


class AxolotlWatchdog(_Gated):
    """Axolotl's `loss_watchdog_threshold` (5.0) with `loss_watchdog_patience` (3), plus NaN."""

    name = "fixed threshold 5.0 (Axolotl)"
    threshold, patience = 5.0, 3

    def reset(self) -> None:
        self.violations = 0

    def findings(self, point: Point) -> list[Finding]:
        loss = point.metrics.get("loss")
        if loss is None:
            return []
        if not math.isfinite(loss):
            return [_finding("watchdog", "loss", loss, point)]
        self.violations = self.violations + 1 if loss > self.threshold else 0
        if self.violations >= self.patience:
            return [_finding("watchdog", "loss", loss, point)]
        return []


class ThreeSigma(_Gated):
    """Loss above mean + 3 standard deviations of the previous 50 losses."""

    name = "3-sigma z on loss (window 50)"

    def reset(self) -> None:
        self.window = RollingWindow(50)

    def findings(self, point: Point) -> list[Finding]:
        loss = point.finite("loss")
        if loss is None:
            return []
        found = []
        if len(self.window) >= self.config.warmup_points:
            mean, std = mean_std(self.window.values())
            if std > 0.0 and loss > mean + 3.0 * std:
                found.append(_finding("three_sigma", "loss", loss, point))
        self.window.push(loss)
        return found


# -- scoring -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Detection:
    label: Label
    case: str
    delay: int | None  # logged points of the label's metric; None when missed


def _index_of_step(points: Sequence[Point], step: int) -> int:
    return next((i for i, p in enumerate(points) if p.step >= step), len(points) - 1)


def _last_index_of_step(points: Sequence[Point], step: int) -> int:
    return max((i for i, p in enumerate(points) if p.step <= step), default=0)


def detect(case: Case, label: Label, alerts: Sequence[Alerted], kind: str | None) -> Detection:
    lo, hi = _index_of_step(case.points, label.onset), _last_index_of_step(case.points, label.until)
    hits = [a.index for a in alerts if lo <= a.index <= hi and (kind is None or a.kind == kind)]
    if not hits:
        return Detection(label, case.name, None)
    delay = sum(1 for p in case.points[lo : min(hits)] if label.metric in p.metrics)
    return Detection(label, case.name, delay)


def caused(case: Case, alert: Alerted) -> bool:
    """Whether an alert falls inside one of the case's labelled anomalies."""
    for label in case.labels:
        lo = _index_of_step(case.points, label.onset if label.cause is None else label.cause)
        hi = _last_index_of_step(case.points, label.until)
        if lo <= alert.index <= hi:
            return True
    return False


@dataclass(slots=True)
class Score:
    detections: dict[str, list[Detection]] = field(default_factory=lambda: defaultdict(list))
    alerts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    true_alerts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    clean_alerts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    clean_points: int = 0


Alerts = list[list[Alerted]]  # per case, in the order of the cases


def score(alerts_per_case: Alerts, cases: Sequence[Case], by_kind: bool) -> Score:
    result = Score()
    for case, alerts in zip(cases, alerts_per_case, strict=True):
        for label in case.labels:
            kind = label.kind if by_kind else None
            result.detections[label.kind].append(detect(case, label, alerts, kind))
        if case.family.startswith("clean"):
            result.clean_points += len(case.points)
        for alert in alerts:
            result.alerts[alert.kind] += 1
            if caused(case, alert):
                result.true_alerts[alert.kind] += 1
            elif case.family.startswith("clean"):
                result.clean_alerts[alert.kind] += 1
    return result


# -- report --------------------------------------------------------------------------------------


def _recall(detections: Sequence[Detection]) -> str:
    if not detections:
        return "-"
    found = sum(d.delay is not None for d in detections)
    return f"{found / len(detections):.2f} ({found}/{len(detections)})"


def _median_delay(detections: Sequence[Detection]) -> str:
    delays = [d.delay for d in detections if d.delay is not None]
    return f"{statistics.median(delays):g}" if delays else "-"


def _per_10k(count: int, points: int) -> str:
    return f"{1e4 * count / points:.2f}" if points else "-"


def _precision(true: int, total: int) -> str:
    return f"{true / total:.2f} ({true}/{total})" if total else "- (0 alerts)"


def kind_table(result: Score) -> str:
    rows = []
    for kind in KINDS:
        detections = result.detections.get(kind, [])
        rows.append(
            [
                kind,
                _recall(detections),
                _median_delay(detections),
                _precision(result.true_alerts[kind], result.alerts[kind]),
                _per_10k(result.clean_alerts[kind], result.clean_points),
            ]
        )
    total_true, total = sum(result.true_alerts.values()), sum(result.alerts.values())
    rows.append(
        [
            "**all kinds**",
            "",
            "",
            _precision(total_true, total),
            _per_10k(sum(result.clean_alerts.values()), result.clean_points),
        ]
    )
    header = ["kind", "recall", "median delay (points)", "precision", "false alerts / 10k clean"]
    return markdown_table(header, rows)


def baseline_table(results: Mapping[str, Score]) -> str:
    rows = []
    for name, result in results.items():
        cells = [name]
        for kind in KINDS:
            detections = result.detections.get(kind, [])
            cells.append(f"{_recall(detections).split()[0]} / {_median_delay(detections)}")
        total_true, total = sum(result.true_alerts.values()), sum(result.alerts.values())
        cells.append(_precision(total_true, total).split()[0])
        cells.append(_per_10k(sum(result.clean_alerts.values()), result.clean_points))
        rows.append(cells)
    header = ["system", *(f"{k} recall / delay" for k in KINDS), "precision", "false / 10k"]
    return markdown_table(header, rows)


def variant_table(result: Score) -> str:
    groups: dict[tuple[str, str], list[Detection]] = defaultdict(list)
    for kind, detections in result.detections.items():
        for d in detections:
            groups[(kind, _variant_group(d.label))].append(d)
    rows = [
        [kind, group, _recall(ds), _median_delay(ds)]
        for (kind, group), ds in sorted(groups.items())
    ]
    return markdown_table(["kind", "variant", "recall", "median delay"], rows)


def _variant_group(label: Label) -> str:
    """Bucket continuous variants (spike size, ramp rate) into a few readable groups."""
    text = label.variant
    if label.kind == "loss_spike" and text.startswith("x"):
        factor = float(text[1:].split()[0])
        return "x3-x5" if factor < 5 else "x5-x10" if factor < 10 else "x10-x20"
    if text.startswith("ramp"):
        rate = float(text.split()[1].rstrip("%/point")) / 100.0
        return "ramp 3-10%/point" if rate < 0.1 else "ramp 10-30%/point"
    if text.startswith("jump"):
        return "jump x2-x30"
    if label.kind in ("zscore", "accuracy_drop") or text.startswith("eval +"):
        return "all"
    return text


def real_table(cases: Sequence[Case], alerts: Mapping[str, Alerts], ours: str) -> str:
    others = [name for name in alerts if name != ours]
    rows = []
    for n, case in enumerate(cases):
        false = {name: sum(not caused(case, a) for a in alerts[name][n]) for name in alerts}
        if not case.labels:
            rows.append(
                [case.name, "(none)", "-", f"{false[ours]} false"]
                + [f"{false[name]} false" for name in others]
            )
            continue
        for label in case.labels:
            mine = detect(case, label, alerts[ours][n], label.kind)
            cells = [
                case.name,
                f"{label.kind} at step {label.onset}",
                _delay_text(mine),
                f"{false[ours]} false",
            ]
            cells += [_delay_text(detect(case, label, alerts[name][n], None)) for name in others]
            rows.append(cells)
    header = ["run", "label", "tunewatch delay", "tunewatch other alerts", *others]
    return markdown_table(header, rows)


def triggered_table(cases: Sequence[Case], alerts: Alerts) -> str:
    """For each labelled kind, how often each alert kind fired inside its window."""
    fired: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[str, int] = defaultdict(int)
    for case, case_alerts in zip(cases, alerts, strict=True):
        for label in case.labels:
            totals[label.kind] += 1
            inside = {a.kind for a in case_alerts if caused(Case("", "", case.points, [label]), a)}
            for kind in inside:
                fired[label.kind][kind] += 1
    rows = [
        [kind, *(f"{fired[kind][k] / totals[kind]:.2f}" if fired[kind][k] else "" for k in KINDS)]
        for kind in KINDS
        if totals[kind]
    ]
    return markdown_table(["labelled \\ alerted", *KINDS], rows)


def _delay_text(detection: Detection) -> str:
    return "missed" if detection.delay is None else f"{detection.delay} points"


# -- real corpus ---------------------------------------------------------------------------------

CORPUS = Path(__file__).resolve().parent / "corpus"
LOGGED_POINT_S = 10.0  # spacing of a log that carries no time of its own
MIN_STEP_S = 0.001  # a trainer state's summary that times its steps faster is not the run's
CORPUS_T0 = 1_700_000_000.0
# A push up to this many logged points after a labelled episode's `until` is still caused by it.
ALLOWANCE_POINTS = 5
# Which alert kinds tell a person about a labelled kind of episode: the first points of a
# divergence look like a spike, and a spike that never recovers is a divergence.
COMPATIBLE = {
    "non_finite": {"non_finite"},
    "divergence": {"divergence", "loss_spike"},
    "loss_spike": {"loss_spike", "divergence"},
    "inverted_loss": {"inverted_loss"},
    "not_learning": {"not_learning", "plateau"},
}
CORPUS_KINDS = tuple(COMPATIBLE)
# The goals on the real corpus, measured in one run.
GOAL_FALSE_PER_10K = 1.0
GOAL_PUSHES_PER_2K = 1.0
GOAL_RECALL_KINDS = ("non_finite", "divergence", "inverted_loss")


@dataclass(frozen=True, slots=True)
class Episode:
    """A labelled episode a person should be told about (bench/corpus/LABELLING.md)."""

    kind: str
    metric: str
    onset_step: int
    until_step: int
    note: str = ""


@dataclass(slots=True)
class CorpusLog:
    id: str
    format: str  # the file tunewatch reads: trainer_state.json, trainer_log.jsonl, metrics.csv
    training: str  # kind of training, from PROVENANCE.md
    points: list[Point]
    episodes: list[Episode]
    timing: str  # how the points' times were set


def _lines(data: bytes) -> list[bytes]:
    """Complete lines as the tailer hands them to a line parser (newline and a CR dropped)."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _metric_rows(events: Iterable[object]) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) of every point the parser emitted, in order."""
    rows: list[tuple[int, dict[str, float]]] = []
    for event in events:
        if isinstance(event, MetricsEvent):
            rows.extend((p.step, dict(p.metrics)) for p in event.points())
    return rows


def _at_fixed_spacing(rows: Sequence[tuple[int, dict[str, float]]]) -> list[Point]:
    return [Point(step, m, CORPUS_T0 + LOGGED_POINT_S * i) for i, (step, m) in enumerate(rows)]


def read_trainer_state(run: str, path: Path) -> tuple[list[Point], str]:
    """Points as TrainerStateParser emits them; the run's `train_runtime` spread over its steps."""
    data = path.read_bytes()
    events, _ = TrainerStateParser(FileOrigin(run, path.name, str(path))).parse(data, None)
    rows = _metric_rows(events)
    history = json.loads(data).get("log_history", [])
    runtime = next((e["train_runtime"] for e in history if "train_runtime" in e), None)
    last_step = max((step for step, _ in rows), default=0)
    per_step = runtime / last_step if runtime and last_step else 0.0
    # A resumed run's summary times only its last `train()` call, which may have done no step
    # at all (`hf-reviewnlp-cls`: 0.05 s for 1.7M steps): no real step takes under a millisecond.
    if per_step < MIN_STEP_S:
        return _at_fixed_spacing(rows), f"{LOGGED_POINT_S:g} s per logged point"
    points = [Point(step, m, CORPUS_T0 + per_step * step) for step, m in rows]
    return points, f"train_runtime over the steps ({per_step:.3g} s per step)"


def _elapsed_s(text: object) -> float | None:
    """LLaMA-Factory's `elapsed_time` ("1:02:03", "1 day, 2:03:04") in seconds."""
    if not isinstance(text, str):
        return None
    days, _, hms = text.rpartition(", ")
    try:
        hours, minutes, seconds = (float(part) for part in hms.split(":"))
        whole_days = float(days.split()[0]) if days else 0.0
    except ValueError:
        return None
    return ((whole_days * 24 + hours) * 60 + minutes) * 60 + seconds


def read_jsonl(run: str, path: Path) -> tuple[list[Point], str]:
    """Points as JsonlParser emits them, at each line's own `elapsed_time`."""
    lines = _lines(path.read_bytes())
    rows = _metric_rows(JsonlParser(FileOrigin(run, path.name, str(path))).parse(lines, 1))
    # The parser drops elapsed_time as bookkeeping: take it from the lines that make points.
    records = [json.loads(line) for line in lines if line.strip()]
    elapsed = [
        _elapsed_s(r.get("elapsed_time"))
        for r in records
        if all(x is not None and x != {} for x in split_step(r))
    ]
    if len(elapsed) != len(rows) or any(e is None for e in elapsed):
        return _at_fixed_spacing(rows), f"{LOGGED_POINT_S:g} s per logged point"
    points = [Point(s, m, CORPUS_T0 + (e or 0.0)) for (s, m), e in zip(rows, elapsed, strict=True)]
    return points, "the log's elapsed_time"


def read_lightning_csv(run: str, path: Path) -> tuple[list[Point], str]:
    """Points as LightningCsvParser emits them (the CSV has no time column)."""
    parser = LightningCsvParser(FileOrigin(run, path.name, str(path)))
    rows = _metric_rows(parser.parse(_lines(path.read_bytes()), 1))
    return _at_fixed_spacing(rows), f"{LOGGED_POINT_S:g} s per logged point"


CorpusReader = Callable[[str, Path], tuple[list[Point], str]]
READERS: dict[str, CorpusReader] = {
    "trainer_state.json": read_trainer_state,
    "trainer_log.jsonl": read_jsonl,
    "metrics.csv": read_lightning_csv,
}


def _training_kinds(provenance: Path) -> dict[str, str]:
    """Log id -> kind of training, from the table in PROVENANCE.md (id, format, training, ...)."""
    kinds: dict[str, str] = {}
    for line in provenance.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and (provenance.parent / cells[0]).is_dir():
            kinds[cells[0]] = cells[2]
    return kinds


def load_corpus(root: Path = CORPUS, only: Sequence[str] = ()) -> list[CorpusLog]:
    """Every log under `root` (one folder each), read with tunewatch's own parsers, labelled."""
    labels = json.loads((root / "labels.json").read_text())
    training = _training_kinds(root / "PROVENANCE.md")
    logs: list[CorpusLog] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if only and folder.name not in only:
            continue
        found = [f for f in folder.iterdir() if f.name in READERS]
        if len(found) != 1:
            raise ValueError(f"{folder} must hold exactly one of {', '.join(READERS)}")
        if folder.name not in labels:
            # Labels come before any replay (LABELLING.md): an unlabelled log is not "clean".
            raise ValueError(f"{folder.name} has no entry in labels.json: label it first")
        (path,) = found
        points, timing = READERS[path.name](folder.name, path)
        episodes = [Episode(**e) for e in labels[folder.name]]
        kind = training.get(folder.name, "?")
        logs.append(CorpusLog(folder.name, path.name, kind, points, episodes, timing))
    return logs


def replay_corpus_log(log: CorpusLog, config: AnomalyConfig) -> list[Alerted]:
    """Feed one log to a run's detectors live, as the anomaly plugin does (one source)."""
    run, timeline = RunDetectors(config), StepTimeline()
    out: list[Alerted] = []
    last: tuple[int, Point] | None = None
    for i, point in enumerate(log.points):
        fresh = timeline.fresh(log.format, point)
        if fresh is None:
            continue
        out.extend(_alerted(i, run.update(fresh).alerts))
        last = (i, fresh)
    if last is not None:
        # The log ends here: the run finished, or went silent (the plugin judges its end then).
        index, point = last
        out.extend(_alerted(index, run.end(point.step, point.time)))
    return out


@dataclass(slots=True)
class LogScore:
    log: CorpusLog
    pushes: list[Alerted]
    false_pushes: list[Alerted]
    found: dict[Episode, int | None]  # delay in points of the episode's metric; None: missed
    recorded: int  # episodes recorded without a push (info tier, cooldown)


def _episode_window(log: CorpusLog, episode: Episode) -> tuple[int, int]:
    points = log.points
    lo = _index_of_step(points, episode.onset_step)
    hi = _last_index_of_step(points, episode.until_step) + ALLOWANCE_POINTS
    return lo, min(hi, len(points) - 1)


def _explains(log: CorpusLog, episode: Episode, alert: Alerted, by_kind: bool) -> bool:
    lo, hi = _episode_window(log, episode)
    kind_ok = not by_kind or alert.kind in COMPATIBLE[episode.kind]
    return kind_ok and lo <= alert.index <= hi


def score_corpus_log(log: CorpusLog, alerts: Sequence[Alerted], by_kind: bool) -> LogScore:
    """Pushes, those no labelled episode explains, and the delay to each episode's first push.

    Baselines have no kinds (`by_kind=False`): any of their pushes in the window counts.
    """
    pushes = [a for a in alerts if a.push]
    false = [a for a in pushes if not any(_explains(log, e, a, by_kind) for e in log.episodes)]
    found: dict[Episode, int | None] = {}
    for episode in log.episodes:
        hits = [a.index for a in pushes if _explains(log, episode, a, by_kind)]
        lo = _episode_window(log, episode)[0]
        found[episode] = (
            None
            if not hits
            else sum(1 for p in log.points[lo : min(hits)] if episode.metric in p.metrics)
        )
    recorded = sum(not a.push for a in alerts)
    return LogScore(log, pushes, false, found, recorded)


@dataclass(frozen=True, slots=True)
class CorpusTotals:
    logs: int
    points: int
    pushes: int
    false_pushes: int
    recorded: int
    found: dict[str, tuple[int, int]]  # labelled kind -> (found, labelled)
    delays: dict[str, list[int]]

    @property
    def false_per_10k(self) -> float:
        return 1e4 * self.false_pushes / self.points if self.points else 0.0

    @property
    def pushes_per_2k(self) -> float:
        return 2e3 * self.pushes / self.points if self.points else 0.0

    @property
    def episodes_found(self) -> int:
        return sum(hit for hit, _ in self.found.values())


def corpus_totals(scores: Sequence[LogScore]) -> CorpusTotals:
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    delays: dict[str, list[int]] = defaultdict(list)
    for s in scores:
        for episode, delay in s.found.items():
            found[episode.kind][1] += 1
            if delay is not None:
                found[episode.kind][0] += 1
                delays[episode.kind].append(delay)
    return CorpusTotals(
        logs=len(scores),
        points=sum(len(s.log.points) for s in scores),
        pushes=sum(len(s.pushes) for s in scores),
        false_pushes=sum(len(s.false_pushes) for s in scores),
        recorded=sum(s.recorded for s in scores),
        found={k: (v[0], v[1]) for k, v in found.items()},
        delays=dict(delays),
    )


def _found_text(totals: CorpusTotals, kind: str) -> str:
    hit, total = totals.found.get(kind, (0, 0))
    return f"{hit / total:.2f} ({hit}/{total})" if total else "-"


def corpus_group_table(scores: Sequence[LogScore]) -> str:
    """Per format and kind of training: the push rates and the labelled episodes found."""
    groups: dict[tuple[str, str], list[LogScore]] = defaultdict(list)
    for s in scores:
        groups[(s.log.format, s.log.training)].append(s)
    rows = []
    for (fmt, training), members in sorted(groups.items()):
        t = corpus_totals(members)
        episodes = sum(v[1] for v in t.found.values())
        found = sum(v[0] for v in t.found.values())
        rows.append(
            [
                fmt,
                training,
                str(t.logs),
                str(t.points),
                str(t.pushes),
                str(t.false_pushes),
                f"{t.false_per_10k:.2f}",
                f"{t.pushes_per_2k:.2f}",
                f"{found}/{episodes}" if episodes else "-",
            ]
        )
    header = [
        "format",
        "training",
        "logs",
        "points",
        "pushes",
        "false",
        "false / 10k",
        "pushes / 2k",
        "episodes found",
    ]
    return markdown_table(header, rows)


def corpus_systems_table(totals: Mapping[str, CorpusTotals]) -> str:
    rows = []
    for name, t in totals.items():
        cells = [name, str(t.pushes), str(t.false_pushes)]
        cells += [f"{t.false_per_10k:.2f}", f"{t.pushes_per_2k:.2f}"]
        cells += [_found_text(t, kind) for kind in CORPUS_KINDS]
        rows.append(cells)
    header = ["system", "pushes", "false", "false / 10k", "pushes / 2k", *CORPUS_KINDS]
    return markdown_table(header, rows)


def corpus_delay_table(totals: CorpusTotals) -> str:
    rows = [
        [
            kind,
            _found_text(totals, kind),
            f"{statistics.median(totals.delays[kind]):g}" if totals.delays.get(kind) else "-",
        ]
        for kind in CORPUS_KINDS
    ]
    return markdown_table(["labelled kind", "recall", "median delay (points)"], rows)


def _alert_text(log: CorpusLog, alert: Alerted) -> str:
    return f"{alert.kind}:{alert.metric}@{log.points[alert.index].step}"


def corpus_log_table(scores: Sequence[LogScore]) -> str:
    rows = []
    for s in scores:
        missed = [f"{e.kind}@{e.onset_step}" for e, d in s.found.items() if d is None]
        rows.append(
            [
                s.log.id,
                s.log.format,
                str(len(s.log.points)),
                str(len(s.log.episodes)),
                str(len(s.pushes)),
                ", ".join(_alert_text(s.log, a) for a in s.false_pushes) or "0",
                ", ".join(missed) or "-",
                str(s.recorded),
            ]
        )
    header = [
        "log",
        "format",
        "points",
        "episodes",
        "pushes",
        "false pushes",
        "missed",
        "recorded, not pushed",
    ]
    return markdown_table(header, rows)


def corpus_goals(t: CorpusTotals) -> str:
    recall = [t.found.get(k, (0, 0)) for k in GOAL_RECALL_KINDS]
    checks = [
        (
            f"false pushes / 10k points <= {GOAL_FALSE_PER_10K:g}",
            t.false_per_10k,
            GOAL_FALSE_PER_10K,
        ),
        (f"pushes / 2,000 points <= {GOAL_PUSHES_PER_2K:g}", t.pushes_per_2k, GOAL_PUSHES_PER_2K),
    ]
    lines = [
        f"- {text}: {value:.2f} {'met' if value <= goal else 'NOT met'}"
        for text, value, goal in checks
    ]
    # What a perfect detector would score: one push per labelled episode, and nothing else.
    episodes = sum(total for _, total in t.found.values())
    floor = 2e3 * episodes / t.points if t.points else 0.0
    lines.append(
        f"  (one push per labelled episode and nothing else would be {floor:.2f} per 2,000 "
        f"points on this corpus: {episodes} episodes in {t.points:,} points; pushes beyond the "
        f"first of each episode found: {t.pushes - t.false_pushes - t.episodes_found})"
    )
    for kind, (hit, total) in zip(GOAL_RECALL_KINDS, recall, strict=True):
        verdict = "no episode labelled" if not total else "met" if hit == total else "NOT met"
        lines.append(f"- recall 1.0 on {kind}: {hit}/{total} {verdict}")
    return "\n".join(lines)


def run_corpus(logs: Sequence[CorpusLog], config: AnomalyConfig, misses: bool) -> None:
    """The live replay of the real corpus, tunewatch and the baselines, printed as tables."""
    started = time.perf_counter()
    ours = [score_corpus_log(log, replay_corpus_log(log, config), by_kind=True) for log in logs]
    totals = {Tunewatch.name: corpus_totals(ours)}
    for baseline in (AxolotlWatchdog(config), ThreeSigma(config)):
        scores = [score_corpus_log(log, baseline.alerts(log.points), False) for log in logs]
        totals[baseline.name] = corpus_totals(scores)
    t = totals[Tunewatch.name]
    formats = sorted({log.format for log in logs})
    print(
        f"Real corpus (bench/corpus): {t.logs} logs ({', '.join(formats)}), {t.points} points, "
        f"{sum(len(log.episodes) for log in logs)} labelled episodes; replayed live in "
        f"{time.perf_counter() - started:.1f} s.\n"
    )
    print("Goals:\n\n" + corpus_goals(t) + "\n")
    print("Per format and kind of training (tunewatch):\n")
    print(corpus_group_table(ours) + "\n")
    print("Labelled episodes (an episode counts as found by a push of a compatible kind):\n")
    print(corpus_delay_table(t) + "\n")
    print("Against baselines (any push of the system inside an episode finds it):\n")
    print(corpus_systems_table(totals) + "\n")
    print("Per log (tunewatch; kind:metric@step):\n")
    print(corpus_log_table(ours) + "\n")
    if misses:
        for s in ours:
            for alert in s.false_pushes:
                say(f"false push {_alert_text(s.log, alert)} in {s.log.id}")
            for episode, delay in s.found.items():
                if delay is None:
                    say(f"missed {episode.kind} at step {episode.onset_step} in {s.log.id}")


def main() -> None:
    args = _arguments()
    config = _config(args.set)
    started = time.perf_counter()
    say(f"machine: {machine_description()}")
    print(f"Machine: {machine_description()}\n")
    if not args.only_corpus:
        run_synthetic_and_tiny(args, config)
    if not args.no_corpus:
        say("replaying the real corpus...")
        run_corpus(load_corpus(args.corpus, args.log), config, args.misses)
    print(f"Total time: {time.perf_counter() - started:.0f} s")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", choices=tuple(SEED_BASES), default="heldout")
    parser.add_argument("--cases", type=int, default=60, help="synthetic cases per kind")
    parser.add_argument("--clean", type=int, default=250, help="clean synthetic runs")
    parser.add_argument("--no-real", action="store_true", help="skip the real tiny runs")
    parser.add_argument("--no-corpus", action="store_true", help="skip the real-log corpus")
    parser.add_argument(
        "--only-corpus", action="store_true", help="the real-log corpus alone (a few seconds)"
    )
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the corpus folder")
    parser.add_argument(
        "--log", action="append", default=[], metavar="ID", help="replay only these corpus logs"
    )
    parser.add_argument(
        "--misses", action="store_true", help="list the missed anomalies and false pushes"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an [anomaly] key (tuning)",
    )
    return parser.parse_args()


def run_synthetic_and_tiny(args: argparse.Namespace, config: AnomalyConfig) -> None:
    """The labelled synthetic curves and the real tiny Trainer runs, with the baselines."""
    say(f"building {args.cases} labelled curves per kind and {args.clean} clean ones...")
    cases = synthetic_cases(SEED_BASES[args.seeds], args.cases, args.clean)
    real = [] if args.no_real else real_cases(REAL_SEEDS[args.seeds])
    systems: list[System] = [Tunewatch(config), AxolotlWatchdog(config), ThreeSigma(config)]
    say("running the detectors...")
    everything = [*cases, *real]
    alerts: dict[str, Alerts] = {}
    seconds: dict[str, float] = {}
    for system in systems:
        started_system = time.perf_counter()
        alerts[system.name] = [system.alerts(case.points) for case in everything]
        seconds[system.name] = time.perf_counter() - started_system
    ours = score(alerts[Tunewatch.name], everything, by_kind=True)
    results = {
        name: score(per_case, everything, by_kind=False) for name, per_case in alerts.items()
    }
    points = sum(len(c.points) for c in everything)
    print(
        f"Seeds: {args.seeds}; {len(everything)} cases, {points} logged points, "
        f"{ours.clean_points} of them in clean runs.\n"
    )
    print("tunewatch, per kind (an anomaly counts as found by an alert of its own kind):\n")
    print(kind_table(ours) + "\n")
    print("By variant:\n")
    print(variant_table(ours) + "\n")
    print("Alerts each labelled anomaly raised (fraction of the anomalies of that kind):\n")
    print(triggered_table(everything, alerts[Tunewatch.name]) + "\n")
    print("Against baselines (an anomaly counts as found by any alert of the system):\n")
    print(baseline_table(results) + "\n")
    if args.misses:
        _list_misses(everything, alerts[Tunewatch.name], ours)
    if real:
        real_alerts = {name: per_case[len(cases) :] for name, per_case in alerts.items()}
        print("Real tiny Trainer runs:\n")
        print(real_table(real, real_alerts, Tunewatch.name) + "\n")
    per_point = {name: 1e6 * t / points for name, t in seconds.items()}
    print("Cost: " + ", ".join(f"{name} {us:.0f} µs per point" for name, us in per_point.items()))


def _list_misses(cases: Sequence[Case], alerts: Alerts, result: Score) -> None:
    """Missed anomalies and unexplained alerts, on stderr: what to look at when tuning."""
    for kind, detections in result.detections.items():
        for d in detections:
            if d.delay is None:
                say(f"missed {kind} ({d.label.variant}) at step {d.label.onset} in {d.case}")
    for case, case_alerts in zip(cases, alerts, strict=True):
        for alert in case_alerts:
            if not caused(case, alert):
                step = case.points[alert.index].step
                say(f"unexplained {alert.kind} on {alert.metric} at step {step} in {case.name}")


def _config(overrides: Sequence[str]) -> AnomalyConfig:
    config = AnomalyConfig()
    for item in overrides:
        key, _, value = item.partition("=")
        current = getattr(config, key)
        config = replace(config, **{key: type(current)(value)})
    return config


if __name__ == "__main__":
    main()
