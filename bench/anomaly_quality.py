"""Detector quality: recall, detection delay, precision and false alerts of the anomaly detectors.

Labelled cases: synthetic fine-tuning logs (tests/fixtures/loss_curves.py: warm-up, decay,
batch noise for batch sizes 1-64, evaluation every N steps) with one injected anomaly each, clean
synthetic logs, and real tiny `transformers.Trainer` runs where the anomaly happens for real (a
learning-rate blow-up, a blow-up to NaN, training data switched to random tokens, overfitting).
Every alert is counted after the same `AlertGate`, i.e. what a person would receive, for
tunewatch's detectors and, in the same run, for two baselines: Axolotl's loss watchdog (loss
above 5.0 for 3 logs, plus a NaN check) and a plain 3-sigma z-score on the loss.

Run: .venv/bin/python bench/anomaly_quality.py [--seeds heldout|dev] [--cases N] [--no-real]
Defaults were tuned on `--seeds dev`; the reported figures use the held-out seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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

from tunewatch.daemon.sources.metric_names import canonical_name
from tunewatch.plugins.anomaly.base import Finding, Point
from tunewatch.plugins.anomaly.config import AnomalyConfig
from tunewatch.plugins.anomaly.gate import AlertGate, RunDetectors
from tunewatch.plugins.anomaly.rolling import RollingWindow, mean_std

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
            for alert in run.update(point).alerts:
                out.append(Alerted(i, alert.finding.kind, alert.finding.metric))
        return out


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
            for alert in gate.update(point, self.findings(point))[0]:
                out.append(Alerted(i, alert.finding.kind, alert.finding.metric))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", choices=tuple(SEED_BASES), default="heldout")
    parser.add_argument("--cases", type=int, default=60, help="synthetic cases per kind")
    parser.add_argument("--clean", type=int, default=250, help="clean synthetic runs")
    parser.add_argument("--no-real", action="store_true", help="skip the real tiny runs")
    parser.add_argument("--misses", action="store_true", help="list the missed anomalies")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an [anomaly] key (tuning)",
    )
    args = parser.parse_args()
    config = _config(args.set)
    started = time.perf_counter()
    say(f"machine: {machine_description()}")
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
    print(f"Machine: {machine_description()}\n")
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
    print(f"Total time: {time.perf_counter() - started:.0f} s")


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
