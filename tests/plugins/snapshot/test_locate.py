"""Finding the folder that holds a step's weights, or knowing why there is none."""

from __future__ import annotations

from pathlib import Path

from tunewatch.plugins.snapshot.locate import Located, Pending, Unavailable, locate

from .helpers import write_checkpoint


def test_the_checkpoint_of_the_step_is_found_and_must_hold_trainer_state(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 10)
    folder = write_checkpoint(tmp_path, 20)
    found = locate(tmp_path, 20, None, "")
    assert found == Located(folder, "checkpoint")
    assert isinstance(found, Located) and found.required_file == "trainer_state.json"


def test_a_path_named_by_the_event_is_preferred(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 20)
    best = tmp_path.parent / f"{tmp_path.name}-best-model"
    best.mkdir()
    found = locate(tmp_path, 20, str(best), "")
    assert found == Located(best, "named")
    assert isinstance(found, Located) and found.required_file is None


def test_a_relative_checkpoint_path_from_the_trainer_is_looked_up_in_the_run_dir(
    tmp_path: Path,
) -> None:
    # Trainers record best_model_checkpoint relative to their own working directory.
    folder = write_checkpoint(tmp_path, 20)
    assert locate(tmp_path, 20, "outputs/llama/checkpoint-20", "") == Located(folder, "checkpoint")


def test_an_event_naming_the_checkpoint_of_another_step_is_not_followed(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 10)
    found = locate(tmp_path, 20, str(tmp_path / "checkpoint-10"), "")
    assert isinstance(found, Unavailable)
    assert "step 10" in found.reason and "step 20" in found.reason


def test_a_missing_step_with_a_later_checkpoint_will_never_come(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 10)
    write_checkpoint(tmp_path, 20)
    found = locate(tmp_path, 15, None, "")
    assert isinstance(found, Unavailable)
    assert "no checkpoint-15" in found.reason and "checkpoint-20" in found.reason


def test_a_missing_step_with_only_earlier_checkpoints_may_still_be_saved(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, 10)
    found = locate(tmp_path, 15, None, "")
    assert isinstance(found, Pending)
    assert "no checkpoint-15" in found.reason and "found: checkpoint-10" in found.reason


def test_model_dir_serves_trainers_without_checkpoint_folders(tmp_path: Path) -> None:
    assert isinstance(locate(tmp_path, 7, None, "latest"), Pending)
    (tmp_path / "latest").mkdir()
    assert locate(tmp_path, 7, None, "latest") == Located(tmp_path / "latest", "model_dir")


def test_a_checkpoint_of_the_step_wins_over_model_dir(tmp_path: Path) -> None:
    (tmp_path / "latest").mkdir()
    folder = write_checkpoint(tmp_path, 7)
    assert locate(tmp_path, 7, None, "latest") == Located(folder, "checkpoint")


def test_a_symlinked_checkpoint_folder_is_not_followed(tmp_path: Path) -> None:
    elsewhere = write_checkpoint(tmp_path / "elsewhere", 5)
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint-5").symlink_to(elsewhere)
    assert isinstance(locate(run, 5, None, ""), Pending)
