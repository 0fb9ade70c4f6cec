"""From findings at every sample to one alert per episode, and one recovery when it is over.

An episode of (resource, path, run) opens on its first finding and stays open, told once, while
findings keep coming; after `recover_samples` samples in a row without one it closes with a
recovery. An episode that opens within `cooldown_s` of the last pushed one of the same key is
recorded but not pushed (a disk hovering at its limit must not ring every few minutes), and its
recovery is pushed only when its alert was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tunewatch.daemon.events import ResourceRecovered
from tunewatch.plugins.resources.findings import Finding, FindingKey

_WORDS = {
    "disk": "Disk space",
    "memory": "Memory",
    "trainer_memory": "Trainer memory",
    "gpu_memory": "GPU memory",
}


@dataclass(frozen=True, slots=True)
class Opened:
    """The first finding of an episode, and whether a person is told."""

    finding: Finding
    push: bool


@dataclass(slots=True)
class _Episode:
    first: Finding
    open: bool = True
    pushed: bool = False
    quiet: int = 0
    last_push: float | None = None


class EpisodeGate:
    """Level findings in, edge alerts and recoveries out, per (resource, path, run)."""

    def __init__(self, *, recover_samples: int, cooldown_s: float) -> None:
        self.recover_samples = max(1, recover_samples)
        self.cooldown_s = cooldown_s
        self._episodes: dict[FindingKey, _Episode] = {}

    def update(
        self, findings: Iterable[Finding], now: float
    ) -> tuple[list[Opened], list[ResourceRecovered]]:
        """One sampling round: every finding of this round (absent keys count as clear)."""
        opened: list[Opened] = []
        seen: set[FindingKey] = set()
        for finding in findings:
            if finding.key in seen:
                continue
            seen.add(finding.key)
            started = self._on_finding(finding, now)
            if started is not None:
                opened.append(started)
        recovered = [
            self._recovery(episode, now)
            for key, episode in self._episodes.items()
            if episode.open and key not in seen and self._quiet_enough(episode)
        ]
        return opened, recovered

    def active(self) -> list[FindingKey]:
        return [key for key, e in self._episodes.items() if e.open]

    def _on_finding(self, finding: Finding, now: float) -> Opened | None:
        episode = self._episodes.get(finding.key)
        if episode is not None and episode.open:
            episode.quiet = 0
            return None
        last_push = episode.last_push if episode is not None else None
        push = last_push is None or now - last_push >= self.cooldown_s
        self._episodes[finding.key] = _Episode(
            finding, pushed=push, last_push=now if push else last_push
        )
        return Opened(finding, push)

    def _quiet_enough(self, episode: _Episode) -> bool:
        episode.quiet += 1
        return episode.quiet >= self.recover_samples

    @staticmethod
    def _recovery(episode: _Episode, now: float) -> ResourceRecovered:
        episode.open = False
        first = episode.first
        what = _WORDS.get(first.resource, first.resource)
        where = first.path or first.run
        subject = f"{what} ({where})" if where else what
        return ResourceRecovered(
            resource=first.resource,
            summary=f"{subject} is fine again; it was: {first.summary}",
            path=first.path,
            run=first.run,
            push=episode.pushed,
            time=now,
        )
