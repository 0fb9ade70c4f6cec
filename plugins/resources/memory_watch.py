"""Memory running out: the host's RAM over its threshold, or a trainer whose RSS climbs towards it.

The kernel's OOM killer ends the biggest process when RAM runs out, and that is the trainer.
- memory: the host's used fraction (psutil's, which counts what is reclaimable as free) is at
  or over `warn_fraction`.
- trainer_memory: the trainer's RSS alone is over `warn_fraction` of RAM, or it has been
  climbing (least-squares slope over the recent samples) fast enough that the host reaches
  `warn_fraction` within `horizon_s` at that rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewatch.daemon.history import fmt_duration
from tunewatch.plugins.resources.findings import Finding, fmt_bytes
from tunewatch.plugins.resources.forecast import seconds_until


@dataclass(frozen=True, slots=True)
class HostMemory:
    total_bytes: int
    used_bytes: int  # total - available

    @property
    def used_fraction(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes > 0 else 0.0


@dataclass(frozen=True, slots=True)
class TrainerMemory:
    run: str
    pid: int
    rss_bytes: int
    growth_per_s: float | None  # least-squares slope of its RSS, if known


def judge_host_memory(host: HostMemory, warn_fraction: float) -> Finding | None:
    used = host.used_fraction
    if used < warn_fraction:
        return None
    return Finding(
        resource="memory",
        severity="critical",
        summary=(
            f"Memory {used:.0%} used ({fmt_bytes(host.total_bytes - host.used_bytes)} "
            f"available; warning at {warn_fraction:.0%})"
        ),
        advice=(
            "Stop what else runs on this machine, or lower the batch size or the number of "
            "data-loader workers at the next restart, before the OOM killer ends the run."
        ),
        value=used,
    )


def judge_trainer_memory(
    trainer: TrainerMemory, host: HostMemory, warn_fraction: float, horizon_s: float
) -> Finding | None:
    limit = warn_fraction * host.total_bytes
    who = f"The trainer of {trainer.run} (pid {trainer.pid})"
    rss = fmt_bytes(trainer.rss_bytes)
    if trainer.rss_bytes >= limit:
        summary = f"{who} uses {rss}, over {warn_fraction:.0%} of RAM"
    elif host.used_bytes >= limit:
        return None  # the host's own finding says it; the trainer is not the news
    else:
        eta = seconds_until(float(host.used_bytes), limit, trainer.growth_per_s)
        if eta is None or eta > horizon_s or trainer.growth_per_s is None:
            return None
        summary = (
            f"{who} grows {fmt_bytes(trainer.growth_per_s * 3600)}/h (now {rss}): memory "
            f"reaches {warn_fraction:.0%} in {fmt_duration(eta)} at this rate"
        )
    return Finding(
        resource="trainer_memory",
        severity="critical",
        summary=summary,
        advice=(
            "Memory that keeps climbing is usually a leak (losses or tensors kept across steps, "
            "a growing cache): save a checkpoint and restart from it, or find the leak, before "
            "the OOM killer ends the run."
        ),
        run=trainer.run,
        value=trainer.rss_bytes / host.total_bytes if host.total_bytes > 0 else None,
    )
