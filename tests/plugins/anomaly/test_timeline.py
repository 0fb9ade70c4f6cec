"""Which values reach the detectors: copies once, a resumed or repaired run's steps again."""

from __future__ import annotations

import json

from tunewatch.plugins.anomaly.base import Point
from tunewatch.plugins.anomaly.timeline import RECENT_STEPS, StepTimeline

LOG = "trainer_log.jsonl"
STATUS = "training_status.json"
STATE = "trainer_state.json"


def judged(timeline: StepTimeline, source: str, steps: range | list[int]) -> list[int]:
    """The steps of `source` whose loss the detectors see."""
    return [s for s in steps if timeline.fresh(source, Point(s, {"loss": 1.0}, 0.0)) is not None]


def test_a_step_given_by_two_sources_is_judged_once_whichever_comes_first() -> None:
    timeline = StepTimeline()
    assert judged(timeline, LOG, range(1, 11)) == list(range(1, 11))
    assert judged(timeline, STATUS, [10, 12]) == [12]
    assert judged(timeline, LOG, [11, 12, 13]) == [11, 13]


def test_a_status_file_ahead_of_a_buffered_log_hides_none_of_the_logs_steps() -> None:
    timeline = StepTimeline()
    judged(timeline, LOG, range(1, 11))
    assert judged(timeline, STATUS, [25, 40]) == [25, 40]
    assert judged(timeline, LOG, range(11, 41)) == [s for s in range(11, 40) if s != 25]


def test_a_replay_of_history_is_not_judged_again_however_far_behind() -> None:
    timeline = StepTimeline()
    judged(timeline, LOG, range(1, 26))
    assert judged(timeline, STATE, range(1, 21)) == []
    assert judged(timeline, STATE, range(21, 31)) == list(range(26, 31))
    judged(timeline, LOG, range(31, 31 + 2 * RECENT_STEPS))
    assert judged(timeline, STATE, range(31, 31 + 2 * RECENT_STEPS)) == []


def test_a_source_going_back_opens_a_segment_judged_from_its_first_step() -> None:
    timeline = StepTimeline()
    judged(timeline, LOG, range(1, 41))
    assert judged(timeline, LOG, range(21, 36)) == list(range(21, 36))
    assert judged(timeline, LOG, range(31, 41)) == list(range(31, 41))  # resumed once more


def test_normal_steps_after_a_bogus_huge_step_are_judged() -> None:
    timeline = StepTimeline()
    judged(timeline, LOG, [*range(1, 41), 2**63 - 1])
    assert judged(timeline, LOG, range(41, 50)) == list(range(41, 50))


def test_a_bogus_huge_step_in_one_source_hides_nothing_of_another() -> None:
    timeline = StepTimeline()
    judged(timeline, LOG, range(1, 41))
    judged(timeline, STATUS, [40, 2**63 - 1])
    assert judged(timeline, LOG, range(41, 41 + 2 * RECENT_STEPS)) == list(
        range(41, 41 + 2 * RECENT_STEPS)
    )


def test_a_second_source_going_back_after_the_first_follows_the_same_segment() -> None:
    timeline = StepTimeline()
    judged(timeline, LOG, range(1, 41))
    judged(timeline, STATE, range(1, 41))
    assert judged(timeline, LOG, range(21, 26)) == list(range(21, 26))
    # trainer_state.json of the resumed run repeats its history from the start: all copies.
    assert judged(timeline, STATE, range(1, 26)) == []
    assert judged(timeline, LOG, [26]) == [26]


def test_only_the_values_not_yet_judged_are_kept_of_a_point() -> None:
    timeline = StepTimeline()
    timeline.fresh(LOG, Point(10, {"loss": 1.0}, 0.0))
    fresh = timeline.fresh(STATE, Point(10, {"loss": 1.0, "eval_loss": 2.0}, 0.0))
    assert fresh is not None and dict(fresh.metrics) == {"eval_loss": 2.0}


def test_where_each_source_stands_survives_a_restart_as_json() -> None:
    timeline = StepTimeline()
    judged(timeline, LOG, range(1, 41))
    judged(timeline, LOG, range(21, 31))
    restored = StepTimeline()
    restored.restore(json.loads(json.dumps(timeline.state())))
    assert judged(restored, STATUS, [30, 31]) == [31]
    assert judged(restored, LOG, range(11, 16)) == list(range(11, 16))
