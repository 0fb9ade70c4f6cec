"""A healthy checkpoint against a diverged one of the same real Trainer run: the healthy one
must win, measured and by the trainer's own eval loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.tiny_training import CORPUS, EVAL_CORPUS, LrBlowUpCallback, train_tiny_run

from tunewatch.plugins.compare.child import compare
from tunewatch.plugins.compare.request import ComparisonRequest

BLOW_UP_STEP = 35


@pytest.fixture(scope="module")
def blown_up_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("blow-up")
    train_tiny_run(
        run,
        max_steps=60,
        save_steps=10,
        eval_steps=10,
        max_grad_norm=0.0,  # no clipping: the learning rate x1000 really wrecks the weights
        callbacks=[LrBlowUpCallback(at_step=BLOW_UP_STEP, factor=1000.0)],
    )
    return run


def test_the_checkpoint_before_the_blow_up_is_recommended(
    blown_up_run: Path, tmp_path: Path
) -> None:
    # Sentences of the run's kind, split into a prompt and the completion to be scored.
    test_file = tmp_path / "held_out.jsonl"
    rows = []
    for sentence in EVAL_CORPUS + CORPUS[:8]:
        words = sentence.split()
        half = len(words) // 2
        rows.append({"prompt": " ".join(words[:half]), "completion": " ".join(words[half:])})
    test_file.write_text("".join(json.dumps(row) + "\n" for row in rows))
    healthy, diverged = blown_up_run / "checkpoint-30", blown_up_run / "checkpoint-60"
    request = ComparisonRequest(
        str(diverged), str(healthy), str(test_file), device="cpu", max_new_tokens=4, repeats=2
    )
    result = compare(request)
    assert result.significance is not None and result.recommendation is not None
    # B (healthy) against A (diverged): the reference answers are far likelier under B.
    assert result.significance.verdict == "better", result.significance.summary
    assert result.b.mean_log_likelihood is not None and result.a.mean_log_likelihood is not None
    assert result.b.mean_log_likelihood > result.a.mean_log_likelihood
    assert result.recommendation.choice == "b"
    # The trainer's eval loss at each step agrees, and is carried along, labelled as its own.
    assert result.b.trainer_metrics["eval_loss"] < result.a.trainer_metrics["eval_loss"]
    assert (result.a.step, result.b.step) == (60, 30)
