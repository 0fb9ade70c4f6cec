"""Specification of canonical metric names and of how a raw record becomes step + metrics."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunewatch.daemon.sources.metric_names import (
    MAX_SANE_STEP,
    as_metric,
    as_step,
    canonical_name,
    number_from_text,
    out_of_range_step,
    split_step,
)


def same(a: float, b: float) -> bool:
    """Equal, counting NaN as equal to NaN."""
    return a == b or (math.isnan(a) and math.isnan(b))


ALIASES = {
    "step": [
        "current_steps",
        "step",
        "global_step",
        "iteration",
        "iter",
        "it",
        "trainer/global_step",
    ],
    "loss": ["loss", "train_loss", "train/loss", "lm loss", "lm_loss"],
    "eval_loss": [
        "eval_loss",
        "eval/loss",
        "val_loss",
        "val/loss",
        "validation_loss",
        "valid_loss",
    ],
    "learning_rate": ["lr", "learning_rate", "learning rate", "train/learning_rate"],
    "grad_norm": ["grad_norm", "grad norm", "gradient_norm", "train/grad_norm"],
    "accuracy": ["accuracy", "acc", "train_accuracy", "train/accuracy"],
    "eval_accuracy": ["eval_accuracy", "eval_acc", "val_acc", "val_accuracy", "eval/accuracy"],
    "epoch": ["epoch", "train/epoch"],
    "total_steps": ["total_steps", "max_steps", "train_iters"],
}


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [(raw, canonical) for canonical, raws in ALIASES.items() for raw in raws],
)
def test_every_documented_alias_maps_to_its_canonical_name(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("LM Loss", "loss"),
        ("lm/loss", "loss"),
        ("Train Loss", "loss"),
        ("Learning_Rate", "learning_rate"),
        ("learning/rate", "learning_rate"),
        ("GRAD NORM", "grad_norm"),
        ("eval accuracy", "eval_accuracy"),
        ("  lm loss ", "loss"),
        ("Trainer/Global_Step", "step"),
    ],
)
def test_case_slash_space_and_underscore_spellings_are_one_name(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical


def test_unknown_names_are_kept_exactly_as_written() -> None:
    assert canonical_name("rewards/chosen") == "rewards/chosen"
    assert canonical_name("Consumed Samples") == "Consumed Samples"


def test_a_llama_factory_record_splits_into_step_and_canonical_metrics() -> None:
    record = {
        "current_steps": 10,
        "total_steps": 1000,
        "loss": 1.2345,
        "lr": 4.9e-05,
        "epoch": 0.01,
        "percentage": 1.0,
        "elapsed_time": "0:00:10",
        "remaining_time": "0:16:40",
    }
    step, metrics = split_step(record)
    assert step == 10
    assert metrics == {
        "total_steps": 1000.0,
        "loss": 1.2345,
        "learning_rate": 4.9e-05,
        "epoch": 0.01,
    }
    assert all(type(value) is float for value in metrics.values())


def test_unknown_numeric_keys_are_kept_under_their_raw_name() -> None:
    _, metrics = split_step({"step": 3, "rewards/chosen": 0.5, "rewards/margins": -1})
    assert metrics == {"rewards/chosen": 0.5, "rewards/margins": -1.0}


def test_bookkeeping_keys_are_not_metrics_even_when_numeric() -> None:
    record = {"step": 1, "loss": 2.0, "percentage": 50, "time": 1.7e9, "timestamp": 1, "pid": 42}
    assert split_step(record) == (1, {"loss": 2.0})


def test_non_finite_values_are_kept_because_detecting_them_is_the_point() -> None:
    _, metrics = split_step({"step": 1, "loss": math.nan, "grad_norm": math.inf, "lr": -math.inf})
    assert math.isnan(metrics["loss"])
    assert metrics["grad_norm"] == math.inf
    assert metrics["learning_rate"] == -math.inf


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nan", math.nan),
        ("NaN", math.nan),
        ("inf", math.inf),
        ("-inf", -math.inf),
        ("Infinity", math.inf),
        ("-INFINITY", -math.inf),
    ],
)
def test_non_finite_strings_become_floats(text: str, expected: float) -> None:
    _, metrics = split_step({"step": 1, "loss": text})
    assert same(metrics["loss"], expected)


@pytest.mark.parametrize(
    ("text", "number"),
    [("1.2", 1.2), ("1e-5", 1e-5), ("-3", -3.0), (" 3 ", 3.0), ("+0.5", 0.5), ("12", 12.0)],
)
def test_a_quoted_number_is_a_number(text: str, number: float) -> None:
    assert split_step({"step": 1, "loss": text}) == (1, {"loss": number})
    assert as_metric(text) == number


@pytest.mark.parametrize(
    "value", ["0:00:10", "llama", "12%", "1,5", "", None, [1.0], {"a": 1.0}, True, False]
)
def test_other_values_are_not_metrics_and_are_dropped_silently(value: object) -> None:
    assert split_step({"step": 1, "loss": value}) == (1, {})


def test_an_integer_beyond_float_range_is_an_infinite_metric() -> None:
    _, metrics = split_step({"step": 1, "loss": 10**400, "grad_norm": -(10**400)})
    assert metrics == {"loss": math.inf, "grad_norm": -math.inf}


@pytest.mark.parametrize(
    ("value", "step"),
    [
        (10, 10),
        (0, 0),
        (10.0, 10),
        ("10", 10),
        (" 12 ", 12),
        (MAX_SANE_STEP, MAX_SANE_STEP),
        (10.5, None),
        ("10.5", None),
        (-1, None),
        ("-1", None),
        (True, None),
        ("ten", None),
        ("nan", None),
    ],
)
def test_a_step_must_be_a_whole_number_from_0_to_the_sane_bound(
    value: object, step: int | None
) -> None:
    assert as_step(value) == step
    assert split_step({"step": value, "loss": 1.0}) == (step, {"loss": 1.0})


@pytest.mark.parametrize(
    "value", [MAX_SANE_STEP + 1, 9223372036854775807, 2**64, 1e300, "9223372036854775807"]
)
def test_a_step_beyond_the_sane_bound_is_no_step_and_says_why(value: object) -> None:
    record = {"current_steps": value, "loss": 1.0}
    assert as_step(value) is None
    assert split_step(record) == (None, {"loss": 1.0})
    why = out_of_range_step(record)
    assert why is not None
    assert why.startswith("current_steps ")
    assert "1,000,000,000" in why


@pytest.mark.parametrize(
    "record",
    [{"step": 5}, {"loss": 1.0}, {"step": -1}, {"step": 10.5}, {"step": "llama"}, {"step": 1e400}],
)
def test_only_an_absurdly_large_step_is_out_of_range(record: dict[str, object]) -> None:
    assert out_of_range_step(record) is None


def test_a_sane_step_under_another_spelling_wins_over_an_absurd_one() -> None:
    assert split_step({"step": 2**63, "global_step": 7, "loss": 1.0}) == (7, {"loss": 1.0})


def test_a_record_without_step_has_no_step_but_keeps_its_metrics() -> None:
    assert split_step({"loss": 1.0}) == (None, {"loss": 1.0})


def test_the_first_usable_step_spelling_wins_and_others_are_not_metrics() -> None:
    assert split_step({"step": 10.5, "global_step": 7, "iteration": 9, "loss": 1.0}) == (
        7,
        {"loss": 1.0},
    )


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("12", 12.0),
        ("1.2e-05", 1.2e-05),
        ("8.560737E+00", 8.560737),
        ("35.500", 35.5),
        ("-3", -3.0),
    ],
)
def test_numbers_written_as_text_are_read(text: str, number: float) -> None:
    assert number_from_text(text) == number


def test_text_that_is_not_a_number_is_none() -> None:
    assert number_from_text("0:00:10") is None
    assert number_from_text("") is None
    assert math.isnan(number_from_text("nan") or 0.0)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(st.dictionaries(st.text(), json_values))
def test_any_json_object_splits_without_error_into_float_metrics(record: dict[str, object]) -> None:
    step, metrics = split_step(record)
    assert step is None or (isinstance(step, int) and step >= 0)
    assert all(type(value) is float for value in metrics.values())
    assert set(metrics) <= {canonical_name(key) for key in record}


@given(st.text())
def test_canonical_names_are_stable(raw: str) -> None:
    assert canonical_name(canonical_name(raw)) == canonical_name(raw)


surrogates = st.characters(categories=["Cs"])  # lone ones: valid in JSON, refused by the store


@given(st.dictionaries(st.text(surrogates) | st.text(surrogates | st.characters()), st.floats()))
def test_metric_names_are_always_text_the_store_can_hold(record: dict[str, float]) -> None:
    _, metrics = split_step(record)
    for name in metrics:
        name.encode("utf-8")


@given(st.floats())
def test_a_number_written_as_text_reads_back_as_itself(number: float) -> None:
    got = as_metric(repr(number))
    assert got is not None and same(got, number)


# Names that cannot be aliases of one another, so each record key yields its own metric.
metric_names = st.sampled_from(
    ["loss", "eval_loss", "learning_rate", "grad_norm", "accuracy", "epoch", "rewards/chosen"]
)


@given(st.integers(0, MAX_SANE_STEP), st.dictionaries(metric_names, st.floats()))
def test_canonical_records_come_back_unchanged(step: int, values: dict[str, float]) -> None:
    got_step, metrics = split_step({"step": step, **values})
    assert got_step == step
    assert metrics.keys() == values.keys()
    for name, value in values.items():
        assert same(metrics[name], value)


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        # Lightning's self.log(..., on_step=True, on_epoch=True) suffixes both spellings.
        ("train_loss_step", "loss"),
        ("train/loss_step", "loss"),
        ("train_acc_step", "accuracy"),
        ("val_loss", "eval_loss"),
        ("val_acc", "eval_accuracy"),
        ("val_loss_epoch", "eval_loss"),
        ("val_acc_epoch", "eval_accuracy"),
        ("val/loss", "eval_loss"),
        ("val/acc", "eval_accuracy"),
        # An epoch average is not one more point of the step loss: it keeps a name of its own.
        ("train_loss_epoch", "train_loss_epoch"),
        ("train/loss_epoch", "train_loss_epoch"),
    ],
)
def test_lightning_step_epoch_and_validation_names(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        # transformers' rewrite_logs (TensorBoard, W&B): `x` -> `train/x`, `eval_x` -> `eval/x`.
        ("train/loss", "loss"),
        ("train/grad_norm", "grad_norm"),
        ("train/learning_rate", "learning_rate"),
        ("train/global_step", "step"),
        ("train/rewards/chosen", "rewards/chosen"),
        ("train/rewards/margins", "rewards/margins"),
        ("train/reward", "reward"),
        ("train/kl", "kl"),
        ("eval/loss", "eval_loss"),
        ("eval/accuracy", "eval_accuracy"),
        ("eval/g0_loss", "eval_g0_loss"),
        ("eval/rewards/chosen", "eval_rewards/chosen"),
        ("test/loss", "test_loss"),
        # The end-of-training summary (Trainer's `train_loss`) is the run's average loss.
        ("train/train_loss", "train/train_loss"),
        ("train/train_runtime", "train_runtime"),
    ],
)
def test_trainer_tensorboard_prefixes_read_back_as_the_trainers_names(
    raw: str, canonical: str
) -> None:
    assert canonical_name(raw) == canonical


def test_a_lightning_csv_row_and_a_wandb_row_split_into_judged_names() -> None:
    csv_row = {"epoch": "0", "step": "49", "train_loss_step": "1.38", "val_acc": "", "lr": "1e-4"}
    assert split_step(csv_row) == (49, {"epoch": 0.0, "loss": 1.38, "learning_rate": 1e-4})
    wandb_row = {"train/global_step": 20, "train/loss": 0.0002, "train/reward": 0.41}
    assert split_step(wandb_row) == (20, {"loss": 0.0002, "reward": 0.41})
