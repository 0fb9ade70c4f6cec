"""The inbox plugin: validates fine-tuning data dropped into a run's `inbox/` folder.

A run opts in by having an `inbox/` folder: tunewatch creates no folder in a run directory (only
a shared inbox, an absolute `[paths] inbox`, is created). A file is validated once it stopped
changing (a file still being copied is never read half written), in a child process so that the
daemon stays responsive and never imports numpy or transformers itself. Results are keyed by
content hash: the same data dropped again is not validated twice. Reports go to
`reports/validation/` (never overwriting one); a failing file can be moved aside to
`inbox/rejected/` (never deleted, never overwriting anything).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import watchfiles

from tunewatch.daemon.atomic import write_atomic
from tunewatch.daemon.config import AtMost, PositiveFloat, Settings
from tunewatch.daemon.events import InboxFileReady, ValidationFinished
from tunewatch.daemon.plugin import PluginContext
from tunewatch.plugins.inbox.quarantine import move_aside
from tunewatch.plugins.inbox.report_names import claim_report_paths, report_base
from tunewatch.plugins.inbox.settle import SettleTracker, is_candidate

if TYPE_CHECKING:
    from tunewatch.plugins.validate.report import ValidationReport

# With nothing pending, the inboxes are also scanned this often (inotify does the rest); a new
# inbox/ folder is found by such a scan.
IDLE_SCAN_S = 30.0

Inbox = tuple[str, Path, Path]  # (run, inbox dir, run dir)


@dataclass(frozen=True, slots=True)
class InboxConfig:
    enabled: bool = True
    # Above 0: at 0 a pending file would be looked at in a busy loop.
    settle_s: PositiveFloat = 3.0
    min_score: Annotated[int, AtMost(100)] = 70
    quarantine: bool = False
    tokenizer: str = ""
    test_file: str = ""
    max_seq_len: int = 0


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What the child process sends back: the report, or why the file could not be read."""

    report: ValidationReport | None
    error: str | None
    markdown: str
    json_text: str


def validate_in_child(
    path: str, tokenizer: str | None, test_file: str | None, max_seq_len: int | None
) -> _Outcome:
    """Runs in the child process: the only place numpy and transformers get imported."""
    from tunewatch.plugins.validate.reader import UnreadableInput
    from tunewatch.plugins.validate.render import dumps_json, render_markdown
    from tunewatch.plugins.validate.tokens import TokenizerNotFound
    from tunewatch.plugins.validate.validate import validate_file

    try:
        report = validate_file(
            Path(path),
            tokenizer=tokenizer,
            test_file=Path(test_file) if test_file else None,
            max_seq_len=max_seq_len,
        )
    except (UnreadableInput, TokenizerNotFound, OSError) as exc:
        return _Outcome(None, str(exc), "", "")
    return _Outcome(report, None, render_markdown(report, verbose=True), dumps_json([report]))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class InboxPlugin:
    """Watches the runs' inboxes, validates complete new files, publishes ValidationFinished."""

    name: ClassVar[str] = "inbox"
    Config: ClassVar[type[InboxConfig]] = InboxConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: InboxConfig = ctx.config
        self.settle = SettleTracker(self.config.settle_s)
        self._pool: ProcessPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None  # one for every inbox together
        self._watched: frozenset[Path] = frozenset()
        self._rewatch = False  # an inbox went away under the watcher
        self._changed = asyncio.Event()
        self._failed: set[tuple[Path, int, int]] = set()  # unreadable files, until they change
        self.validated = 0

    @classmethod
    def doctor_checks(cls, config: InboxConfig, settings: Settings) -> list[Any]:
        from tunewatch.plugins.inbox.doctor import checks

        return checks(config, settings)

    async def start(self) -> None:
        # "spawn": a fork of the daemon would inherit its event loop, threads and sockets.
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        await asyncio.to_thread(self._create_shared_inbox)
        self._tasks.append(self.ctx.spawn(self._scan_loop(), name="scan"))

    async def stop(self) -> None:
        for task in [*self._tasks, *filter(None, [self._watcher])]:
            await _cancelled(task)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    # -- where the inboxes are ----------------------------------------------------------------

    def _shared_inbox(self) -> Path | None:
        """The one inbox of all runs when `[paths] inbox` is absolute; None: each run's own."""
        inbox = Path(self.ctx.settings.paths.inbox).expanduser()
        return inbox if inbox.is_absolute() else None

    def _create_shared_inbox(self) -> None:
        """A shared inbox is one the user asked for by name: make sure it exists."""
        shared = self._shared_inbox()
        if shared is None:
            return  # a run's own inbox/ is the user's to create: that is how a run opts in
        try:
            shared.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.ctx.log.warning("cannot create the inbox", path=str(shared), error=str(exc))

    async def inboxes(self) -> list[Inbox]:
        """(run, inbox dir, run dir) for each inbox folder that exists."""
        runs = await self.ctx.store.call(self.ctx.store.store.runs)
        names_and_dirs = [(run.name, run.path) for run in runs]
        shared = self._shared_inbox()
        if shared is not None:
            return await asyncio.to_thread(_shared_inbox_of_first_run, shared, names_and_dirs)
        own = self.ctx.settings.paths.inbox
        return await asyncio.to_thread(_runs_with_own_inbox, names_and_dirs, own)

    # -- loops ----------------------------------------------------------------------------------

    async def _watch_inboxes(self, dirs: frozenset[Path]) -> None:
        """One watcher for all inboxes, replaced when the set of inboxes changes."""
        if dirs == self._watched and not self._rewatch:
            return
        if self._watcher is not None:
            await _cancelled(self._watcher)
        self._watched, self._rewatch = dirs, False
        self._watcher = self.ctx.spawn(self._watch(sorted(dirs)), name="watch") if dirs else None

    async def _watch(self, dirs: list[Path]) -> None:
        try:
            async for _changes in watchfiles.awatch(*dirs, step=200, recursive=False):
                self._changed.set()
        except FileNotFoundError:
            self._rewatch = True  # an inbox was removed: the next scan watches those still there
        except OSError as exc:  # e.g. no inotify watch left; tried again when the inboxes change
            message = f"cannot watch the inboxes; they are scanned every {IDLE_SCAN_S:g} s"
            self.ctx.log.warning(message, error=str(exc))

    async def _scan_loop(self) -> None:
        while True:
            self._changed.clear()  # a change from here on, even during this scan, brings the next
            inboxes = await self.inboxes()
            await self._watch_inboxes(frozenset(inbox for _run, inbox, _dir in inboxes))
            await self._scan(inboxes)
            wait = self.config.settle_s / 2 if self.settle.pending() else IDLE_SCAN_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait)

    async def scan_once(self, now: float | None = None) -> int:
        """Look at every inbox once; validate the files that are ready. Returns how many."""
        return await self._scan(await self.inboxes(), now)

    async def _scan(self, inboxes: list[Inbox], now: float | None = None) -> int:
        done = 0
        for run, inbox, run_dir in inboxes:
            for path, size, mtime_ns in await asyncio.to_thread(_files_in, inbox):
                if await self._maybe_validate(run, run_dir, path, (size, mtime_ns), now):
                    done += 1
        return done

    async def _maybe_validate(
        self, run: str, run_dir: Path, path: Path, signature: tuple[int, int], now: float | None
    ) -> bool:
        size, mtime_ns = signature
        if (path, size, mtime_ns) in self._failed:
            return False
        now = time.monotonic() if now is None else now
        if not self.settle.observe(path, size, mtime_ns, now):
            return False
        self.settle.forget(path)
        digest = await asyncio.to_thread(sha256_of, path)
        store = self.ctx.store
        if await store.call(store.store.plugin_get, self.name, f"sha256:{digest}"):
            self._failed.add((path, size, mtime_ns))  # seen: do not hash it again
            self.ctx.log.info("already validated (same content)", run=run, path=str(path))
            return False
        self.ctx.bus.publish(InboxFileReady(run=run, path=str(path), sha256=digest))
        await self._validate(run, run_dir, path, digest, signature)
        return True

    async def _validate(
        self, run: str, run_dir: Path, path: Path, digest: str, signature: tuple[int, int]
    ) -> None:
        assert self._pool is not None
        cfg = self.config
        tokenizer = cfg.tokenizer or (str(run_dir) if _has_checkpoint_tokenizer(run_dir) else None)
        loop = asyncio.get_running_loop()
        outcome: _Outcome = await loop.run_in_executor(
            self._pool,
            validate_in_child,
            str(path),
            tokenizer,
            cfg.test_file or None,
            cfg.max_seq_len or None,
        )
        if outcome.report is None:
            # Not data at all (empty, binary, unreadable): say so once, and not again until the
            # file changes.
            self._failed.add((path, *signature))
            self.ctx.log.warning("cannot validate", run=run, path=str(path), error=outcome.error)
            self.ctx.bus.publish(
                ValidationFinished(
                    run=run,
                    path=str(path),
                    score=0,
                    verdict="unreadable",
                    errors=1,
                    warnings=0,
                    report_path=None,
                )
            )
            return
        report = outcome.report
        reports = self.ctx.run_path(run_dir, self.ctx.settings.paths.reports) / "validation"
        base = report_base(path.name, time.strftime("%Y%m%d-%H%M%S"))
        md_path, json_path = await asyncio.to_thread(claim_report_paths, reports, base)
        await asyncio.to_thread(write_atomic, md_path, outcome.markdown)
        await asyncio.to_thread(write_atomic, json_path, outcome.json_text)
        failing = report.score < cfg.min_score
        final_path = path
        if failing and cfg.quarantine:
            rejected = path.parent / "rejected"
            final_path = await asyncio.to_thread(move_aside, path, rejected)
        record = {
            "path": str(final_path),
            "score": report.score,
            "verdict": report.verdict,
            "report": str(md_path),
            "time": time.time(),
        }
        store = self.ctx.store
        await store.call(store.store.plugin_put, self.name, f"sha256:{digest}", json.dumps(record))
        self.validated += 1
        self.ctx.bus.publish(
            ValidationFinished(
                run=run,
                path=str(final_path),
                score=report.score,
                verdict="fix" if failing else report.verdict,
                errors=report.errors,
                warnings=report.warnings,
                report_path=str(md_path),
            )
        )


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _runs_with_own_inbox(runs: list[tuple[str, str]], inbox: str) -> list[Inbox]:
    """The runs whose own inbox folder exists: one stat per run, cheap even for 10,000 runs."""
    # Strings, not Paths, for the runs without an inbox (most): a third of the time.
    return [
        (name, Path(run_dir, inbox), Path(run_dir))
        for name, run_dir in runs
        if os.path.isdir(os.path.join(run_dir, inbox))
    ]


def _shared_inbox_of_first_run(inbox: Path, runs: list[tuple[str, str]]) -> list[Inbox]:
    """A shared inbox, given to the first run whose directory exists (its reports go there)."""
    if not inbox.is_dir():
        return []
    for name, run_dir in runs:
        if os.path.isdir(run_dir):
            return [(name, inbox, Path(run_dir))]
    return []


def _files_in(inbox: Path) -> list[tuple[Path, int, int]]:
    """(path, size, mtime_ns) of each candidate file directly in `inbox`."""
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(inbox):
            path = Path(entry.path)
            if entry.is_file(follow_symlinks=False) and is_candidate(path):
                st = entry.stat()
                found.append((path, st.st_size, st.st_mtime_ns))
    return sorted(found)


def _has_checkpoint_tokenizer(run_dir: Path) -> bool:
    # tokens.py imports no numpy or transformers at module level: safe in the daemon.
    from tunewatch.plugins.validate.tokens import TokenizerNotFound, resolve_tokenizer

    try:
        resolve_tokenizer(run_dir)
    except (TokenizerNotFound, OSError):
        return False
    return True


__all__ = ["InboxConfig", "InboxPlugin", "sha256_of", "validate_in_child"]
