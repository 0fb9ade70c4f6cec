"""The eval metrics a Trainer logged at a checkpoint's step, from its trainer_state.json."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from tunewatch.plugins.compare.trainer_metrics import trainer_metrics

STATE = {
    "global_step": 600,
    "log_history": [
        {"step": 500, "loss": 1.2, "eval_loss": 1.31},
        {"step": 600, "loss": 1.1, "learning_rate": 1e-5},
        {"step": 600, "eval_loss": 1.25, "eval_accuracy": 0.61, "eval_runtime": 3.2},
        {"step": 600, "eval_bad": float("nan"), "eval_flag": True, "eval_name": "x"},
    ],
}


def test_the_eval_metrics_at_the_checkpoint_step_are_read(tmp_path: Path) -> None:
    (tmp_path / "trainer_state.json").write_text(json.dumps(STATE))
    step, metrics = trainer_metrics(tmp_path)
    assert step == 600
    # Only finite numbers of that step: not 500's eval_loss, not NaN, a bool or a string.
    assert metrics == {"eval_loss": 1.25, "eval_accuracy": 0.61, "eval_runtime": 3.2}


def test_a_snapshot_without_a_readable_state_has_none(tmp_path: Path) -> None:
    assert trainer_metrics(tmp_path) == (None, {})
    (tmp_path / "trainer_state.json").write_text("{not json")
    assert trainer_metrics(tmp_path) == (None, {})
    (tmp_path / "trainer_state.json").write_text("[1, 2]")
    assert trainer_metrics(tmp_path) == (None, {})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["global_step", "log_history", "best_metric", "x"]), json_values
    )
)
def test_any_json_is_read_without_an_error(state: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "trainer_state.json").write_text(json.dumps(state))
        step, metrics = trainer_metrics(Path(folder))
    assert step is None or isinstance(step, int)
    assert all(k.startswith("eval_") and isinstance(v, float) for k, v in metrics.items())
