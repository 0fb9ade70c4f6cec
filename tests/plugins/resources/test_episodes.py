"""Episodes: told once while a condition holds, recovered after N clear samples, held back
within the cooldown."""

from __future__ import annotations

from tunewatch.plugins.resources.episodes import EpisodeGate
from tunewatch.plugins.resources.findings import Finding

DISK = Finding("disk", "critical", "/data fills in 40 min", "", path="/data")
GPU = Finding("gpu_memory", "normal", "gpu0 memory 99% used", "", path="gpu0")


def test_an_episode_is_told_once_and_recovers_after_enough_clear_samples() -> None:
    gate = EpisodeGate(recover_samples=3, cooldown_s=3600)
    opened, recovered = gate.update([DISK, GPU], 0)
    assert [(o.finding.resource, o.push) for o in opened] == [("disk", True), ("gpu_memory", True)]
    assert gate.update([DISK, GPU], 300) == ([], [])
    assert gate.update([GPU], 600) == ([], [])
    assert gate.update([DISK, GPU], 900) == ([], [])  # one clear sample is not a recovery
    for t in (1200, 1500):
        assert gate.update([GPU], t) == ([], [])
    opened, recovered = gate.update([GPU], 1800)
    assert opened == []
    (recovery,) = recovered
    assert (recovery.resource, recovery.path, recovery.push, recovery.time) == (
        "disk",
        "/data",
        True,
        1800,
    )
    assert recovery.summary == "Disk space (/data) is fine again; it was: /data fills in 40 min"
    assert gate.active() == [("gpu_memory", "gpu0", None)]


def test_an_episode_back_within_the_cooldown_is_recorded_not_pushed_nor_its_recovery() -> None:
    gate = EpisodeGate(recover_samples=1, cooldown_s=3600)
    gate.update([DISK], 0)
    assert gate.update([], 300)[1][0].push
    (again,), _ = gate.update([DISK], 600)
    assert not again.push
    assert not gate.update([], 900)[1][0].push
    (later,), _ = gate.update([DISK], 3700)  # the cooldown counts from the last push
    assert later.push
