"""When a volume fills: the checkpoint rule and the rate rule, on simulated disk_usage series."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tunewatch.daemon.store import RunRow
from tunewatch.plugins.resources.checkpoints import Cadence, Checkpoint
from tunewatch.plugins.resources.config import ResourcesConfig
from tunewatch.plugins.resources.disk_forecast import (
    DiskState,
    RunSaves,
    judge_disk,
    remaining_saves,
)
from tunewatch.plugins.resources.findings import Finding
from tunewatch.plugins.resources.memory_watch import HostMemory
from tunewatch.plugins.resources.watch import ResourceWatch

from .conftest import run_row, write_checkpoint

GiB = 2**30
NOW = 1_700_000_000.0
TOTAL = 100 * GiB


class SimulatedDisk:
    """A `disk_usage` whose free space the test sets, and a clock that moves 5 min a sample."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.now = NOW

    def usage(self, path: Path) -> tuple[int, int, int]:
        return (TOTAL, TOTAL - self.free, self.free)

    def clock(self) -> float:
        return self.now

    def rounds(
        self, watch: ResourceWatch, runs: list[RunRow], fall_per_round: int, count: int
    ) -> list[list[Finding]]:
        found: list[list[Finding]] = []
        for _ in range(count):
            found.append([f for f in watch.observe(runs).findings if f.resource == "disk"])
            self.free -= fall_per_round
            self.now += 300
        return found


def watch_of(disk: SimulatedDisk, **config: float) -> ResourceWatch:
    return ResourceWatch(
        ResourcesConfig(**config),  # type: ignore[arg-type]
        disk_usage=disk.usage,
        host_memory=lambda: HostMemory(16 * GiB, 4 * GiB),
        rss=lambda pid: None,
        clock=disk.clock,
    )


def saves(size: int, *, every_s: float | None, mtime: float = NOW, **kw: object) -> RunSaves:
    newest = Checkpoint(Path("/data/run-a/checkpoint-300"), 300, mtime)
    return RunSaves("run-a", newest, size, Cadence(every_s, 100 if every_s else None), **kw)  # type: ignore[arg-type]


def disk(free: int, consumed_per_s: float | None = None) -> DiskState:
    return DiskState("/data", TOTAL, free, consumed_per_s, 3600.0)


def test_a_steady_disk_never_alerts(tmp_path: Path) -> None:
    sim = SimulatedDisk(free=3 * GiB)
    rounds = sim.rounds(watch_of(sim), [run_row(tmp_path)], fall_per_round=0, count=20)
    assert rounds == [[]] * 20


def test_a_disk_falling_fast_alerts_once_the_trend_is_known_and_says_when_it_fills(
    tmp_path: Path,
) -> None:
    sim = SimulatedDisk(free=10 * GiB)
    rounds = sim.rounds(watch_of(sim), [run_row(tmp_path)], fall_per_round=GiB, count=4)
    assert rounds[:2] == [[], []]  # two samples make no slope
    (finding,) = rounds[2]
    assert finding.severity == "critical" and finding.path == "/"
    # 8 GiB free, falling 1 GiB per 5 min: 40 min.
    assert finding.summary.startswith("/ fills in 40 min at the rate it is filling (12.0 GiB/h")


def test_a_slow_fall_beyond_disk_warn_hours_is_not_told(tmp_path: Path) -> None:
    sim = SimulatedDisk(free=10 * GiB)
    slow = GiB // 30  # 0.4 GiB/h: 25 h to fill
    rounds = sim.rounds(watch_of(sim), [run_row(tmp_path)], fall_per_round=slow, count=12)
    assert all(r == [] for r in rounds)


def test_the_next_checkpoint_that_will_not_fit_is_named_with_when_it_is_due() -> None:
    finding = judge_disk(disk(3 * GiB), [saves(4 * GiB, every_s=600, mtime=NOW - 480)], 7200, NOW)
    assert finding is not None
    assert finding.summary == (
        "checkpoint-400 of run-a (4.0 GiB) will not fit: 3.0 GiB free on /data, due in 2 min"
    )


def test_checkpoints_due_within_the_horizon_that_do_not_fit_say_when_the_disk_fills() -> None:
    # 10 GiB free, 3 GiB every 20 min: the 4th save (at 80 min) does not fit.
    finding = judge_disk(disk(10 * GiB), [saves(3 * GiB, every_s=1200)], 7200, NOW)
    assert isinstance(finding, Finding)
    assert finding.summary == (
        "/data fills in 80 min at the rate checkpoints use it: the 4 checkpoints due by then "
        "need 12.0 GiB, 2.0 GiB more than the 10.0 GiB free"
    )


def test_a_run_that_ends_before_the_horizon_saves_only_what_is_left() -> None:
    ending = saves(3 * GiB, every_s=1200, remaining=3)
    assert judge_disk(disk(10 * GiB), [ending], 7200, NOW) is None
    assert remaining_saves(300, 100, 600) == 3
    assert remaining_saves(300, 100, None) is None


def test_a_run_that_rotates_its_checkpoints_needs_room_for_one_more_only() -> None:
    rotating = saves(3 * GiB, every_s=1200, rotating=True)
    assert judge_disk(disk(10 * GiB), [rotating], 7200, NOW) is None
    assert judge_disk(disk(2 * GiB), [rotating], 7200, NOW) is not None


def test_with_no_cadence_yet_the_next_checkpoint_still_has_to_fit() -> None:
    finding = judge_disk(disk(GiB), [saves(2 * GiB, every_s=None)], 7200, NOW)
    assert finding is not None
    assert (
        finding.summary
        == "its next checkpoint of run-a (2.0 GiB) will not fit: 1.0 GiB free on /data"
    )


def test_the_earlier_of_the_two_forecasts_is_the_one_told() -> None:
    fast = 10 * GiB / 600  # fills in 10 min
    finding = judge_disk(disk(10 * GiB, fast), [saves(3 * GiB, every_s=1200)], 7200, NOW)
    assert finding is not None and "at the rate it is filling" in finding.summary


def test_a_run_that_stopped_saving_long_ago_is_not_expected_to_save(tmp_path: Path) -> None:
    sim = SimulatedDisk(free=1024)
    run_dir = tmp_path / "run-a"
    for step in (100, 200):
        write_checkpoint(run_dir, step, 4096, mtime=NOW - 86_400 + step)
    assert sim.rounds(watch_of(sim), [run_row(run_dir)], fall_per_round=0, count=1) == [[]]
    write_checkpoint(run_dir, 300, 4096, mtime=NOW - 60)
    (finding,) = sim.rounds(watch_of(sim), [run_row(run_dir)], 0, 1)[0]
    assert "checkpoint-400 of run-a" in finding.summary


@given(
    st.integers(min_value=0, max_value=2**50),
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2**40),
            st.one_of(st.none(), st.floats(min_value=1e-6, max_value=1e6)),
            st.floats(min_value=-1e7, max_value=1e7),
            st.one_of(st.none(), st.integers(min_value=0, max_value=10**6)),
        ),
        max_size=4,
    ),
    st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_any_disk_and_runs_give_a_sane_forecast_quickly(
    free: int,
    runs: list[tuple[int, float | None, float, int | None]],
    consumed: float | None,
) -> None:
    planned = [
        saves(size, every_s=every, mtime=NOW + offset, remaining=remaining)
        for size, every, offset, remaining in runs
    ]
    finding = judge_disk(disk(free, consumed), planned, 7200, NOW)
    if finding is None:
        return
    assert finding.severity == "critical" and " -" not in finding.summary  # no negative ETA
    assert finding.value is not None and 0.0 <= finding.value <= 1.0
