"""The daemon's lifecycle: open the store, start plugins, follow runs, stop cleanly on a signal.

SIGTERM and SIGINT drain the bus and exit 0; SIGHUP reloads the configuration. Under systemd
the daemon reports READY=1 once it has caught up, pings the watchdog from the event loop (a
hung loop gets restarted), keeps STATUS= current and says STOPPING=1 on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import glob
import os
import signal
import threading
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog

from tunewatch.daemon import events as ev
from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import ConfigError, Settings
from tunewatch.daemon.downsampling import run_downsampling
from tunewatch.daemon.instance_lock import LISTED_FAULTS, DaemonHealth, InstanceLock
from tunewatch.daemon.memory import release_freed_memory, tune_malloc
from tunewatch.daemon.plugin import (
    PluginContext,
    PluginHost,
    discover_plugins,
    load_checked_settings,
    plugin_config,
)
from tunewatch.daemon.recorder import HistoryRecorder
from tunewatch.daemon.sdnotify import SdNotifier, report_startup, run_watchdog
from tunewatch.daemon.store import AsyncStore, StateDirError, StoreFailure
from tunewatch.daemon.watcher import RunWatcher

log = structlog.get_logger(__name__)

STATUS_INTERVAL_S = 10.0
# With `--once`, how long plugins may take to finish after the catch-up (in effect: all of it).
ONCE_DRAIN_S = 24 * 3600.0
# After SIGTERM, the process exits within this long even if a thread is stuck (systemd's
# TimeoutStopSec in the shipped unit is 20 s).
STOP_GRACE_S = 15.0
# While catching up, systemd's start timeout is pushed back this often (see report_startup).
STARTUP_REPORT_S = 10.0
# While catching up, a store call or file read that has not returned for this long stops the
# start-timeout extensions, so systemd fails the start instead of waiting for ever.
STARTUP_STUCK_S = 60.0


class Daemon:
    """One running tunewatch: store, bus, plugins and the run watcher."""

    def __init__(
        self,
        settings: Settings,
        *,
        run_specs: Sequence[str] = (),
        config_path: Path | None = None,
        notifications: bool = True,
        once: bool = False,
    ) -> None:
        if once:
            # `--once` reads everything present and judges all of it before exiting: plugins
            # get as long as they need to finish (a stop under systemd keeps the 5 s default).
            daemon = dataclasses.replace(settings.daemon, drain_timeout_s=ONCE_DRAIN_S)
            settings = dataclasses.replace(settings, daemon=daemon)
        self.settings = settings
        self.config_path = config_path
        self.cli_run_specs = list(run_specs)
        self.notifications = notifications
        self.once = once
        self.notifier = SdNotifier.from_env()
        self.stop_event = asyncio.Event()
        self._reload_requested = False
        self.watcher: RunWatcher  # set by run()
        self.host = PluginHost()
        # Set by `run_daemon`: the process exits this long after SIGTERM whatever is stuck.
        self.stop_grace_s: float | None = None
        self._stop_timer: threading.Timer | None = None
        self._started = time.time()  # reset by run(); what `health` reports

    def run_specs(self) -> list[str]:
        return self.cli_run_specs or list(self.settings.daemon.runs)

    async def run(self) -> int:
        state_dir = self.settings.state_dir()
        try:
            lock = InstanceLock.acquire(state_dir)
        except OSError as exc:
            raise StateDirError(
                f"cannot use the state directory {state_dir}: {exc.strerror or exc}; make it "
                "writable or choose another with [daemon] state_dir"
            ) from exc
        try:
            return await self._run_locked(lock)
        finally:
            lock.release()

    async def _run_locked(self, lock: InstanceLock) -> int:
        store = await AsyncStore.open(self.settings.state_db())
        bus = EventBus(default_maxsize=self.settings.daemon.queue_size)

        recorder = HistoryRecorder(store, bus)
        host = self.host
        self.watcher = RunWatcher(
            self.settings, store, bus, self.run_specs(), retry_store=not self.once
        )
        self._install_signal_handlers()
        background: list[asyncio.Task[None]] = []
        started = self._started = time.time()
        try:
            lock.update(self.health(started))
            await self.watcher.refresh_runs()
            await self._start_plugins(host, bus, store, self.watcher)
            startup = asyncio.create_task(
                report_startup(
                    self.notifier,
                    lambda: _catch_up_status(self.watcher),
                    STARTUP_REPORT_S,
                    functools.partial(self._pipeline_stuck, store, STARTUP_STUCK_S),
                )
            )
            try:
                caught_up = await self._until_stopped(self.watcher.catch_up())
            except StoreFailure as exc:  # only with --once: a daemon waits for the store
                log.error("cannot record", reason=str(exc))
                return 1
            finally:
                startup.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await startup
            if not caught_up:
                return 0
            bus.publish(ev.CaughtUp(await store.call(store.store.last_seq)))
            if self.once:
                return 0
            self.notifier.ready()
            interval = self.notifier.watchdog_interval_s()
            if interval is not None:
                stuck = functools.partial(self._pipeline_stuck, store, 2 * interval)
                background.append(asyncio.create_task(run_watchdog(self.notifier, interval, stuck)))
            background.append(asyncio.create_task(self._status_loop(lock, started)))
            background.append(
                asyncio.create_task(run_downsampling(store, lambda: self.settings.daemon))
            )
            specs = self.run_specs()
            # A run folder that does not exist yet (a typo, or training not started) is watched
            # for; saying so at start saves a person wondering why nothing is recorded.
            waiting = await asyncio.to_thread(_missing, specs)
            log.info(
                "tunewatch running",
                runs=specs,
                db=str(self.settings.state_db()),
                **({"waiting_for": waiting} if waiting else {}),
            )
            while True:
                await self.watcher.run(self.stop_event)
                if not self._reload_requested:
                    break
                self.watcher = await self._reload(self.watcher, store, bus)
            return 0
        finally:
            self.notifier.stopping()
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            # Plugins finish what is queued for them (the alerts of a last batch), then stop
            # (and may say a last word, e.g. a summary), then the bus delivers that and closes.
            await bus.drain(self.settings.daemon.drain_timeout_s)
            await host.stop()
            await bus.close(self.settings.daemon.drain_timeout_s)
            await recorder.close()
            await store.close()
            log.info("tunewatch stopped")

    def _pipeline_stuck(self, store: AsyncStore, limit_s: float) -> str | None:
        """What has not come back for over `limit_s` (see `run_watchdog`), or None."""
        store_call, read = store.oldest_pending(), self.watcher.ingest.stuck_read()
        if store_call is not None and store_call[1] > limit_s:
            return f"store call {store_call[0]} has not returned for {store_call[1]:.0f} s"
        if read is not None and read[1] > limit_s:
            return f"reading {read[0]} has not returned for {read[1]:.0f} s"
        return None

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` unless a stop is requested first; True when it completed."""
        task = asyncio.create_task(work)
        stopper = asyncio.create_task(self.stop_event.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _start_plugins(
        self, host: PluginHost, bus: EventBus, store: AsyncStore, watcher: RunWatcher
    ) -> None:
        # What a plugin publishes while starting (alerts from its replay) waits until every
        # plugin has subscribed: the notify plugin starts after the anomaly plugin.
        with bus.held():
            await self._start_each_plugin(host, bus, store, watcher)

    async def _start_each_plugin(
        self, host: PluginHost, bus: EventBus, store: AsyncStore, watcher: RunWatcher
    ) -> None:
        run_dirs = {run.name: run.path for run in watcher.runs.values()}
        for found in discover_plugins():
            if found.cls is None:
                host.failed[found.name] = found.error or "failed to load"
                log.error("plugin failed to load", plugin=found.name, error=found.error)
                continue
            config = plugin_config(found, self.settings)
            if not getattr(config, "enabled", True):
                continue
            ctx = PluginContext(
                name=found.name,
                bus=bus,
                store=store,
                config=config,
                settings=self.settings,
                log=structlog.get_logger(f"tunewatch.plugins.{found.name}").bind(plugin=found.name),
                run_dirs=run_dirs,
                notifications=self.notifications,
                on_failure=self._plugin_failed,
                on_recovered=self._plugin_recovered,
                health=lambda: self.health(self._started),
            )
            try:
                plugin = found.cls(ctx)
            except Exception as exc:
                host.failed[found.name] = f"{type(exc).__name__}: {exc}"
                log.exception("plugin failed to initialise", plugin=found.name)
                continue
            await host.start(plugin)

    def _plugin_failed(self, plugin: str, why: str) -> None:
        self.host.task_failed(plugin, why)
        self.watcher.ingest.health_changed.set()  # `status` and `plugins` learn it at once

    def _plugin_recovered(self, plugin: str) -> None:
        self.host.task_recovered(plugin)
        self.watcher.ingest.health_changed.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def request_stop(self) -> None:
        if self.stop_event.is_set() and not self._reload_requested:
            return
        log.info("stopping")
        self._reload_requested = False
        self.stop_event.set()
        if self.stop_grace_s is not None and self._stop_timer is None:
            self._stop_timer = _exit_if_stop_hangs(self.stop_grace_s)

    def stopped(self) -> None:
        """The process is about to exit normally: the stop timer is not needed any more."""
        if self._stop_timer is not None:
            self._stop_timer.cancel()

    def request_reload(self) -> None:
        log.info("reloading configuration")
        self._reload_requested = True
        self.stop_event.set()

    async def _reload(self, old: RunWatcher, store: AsyncStore, bus: EventBus) -> RunWatcher:
        self.notifier.reloading()
        self._reload_requested = False
        self.stop_event = asyncio.Event()
        try:
            self.settings = await asyncio.to_thread(load_checked_settings, self.config_path)
        except ConfigError as exc:
            log.error("configuration not reloaded; keeping the previous one", error=str(exc))
        watcher = RunWatcher(self.settings, store, bus, self.run_specs())
        await watcher.catch_up()
        self.notifier.ready()
        return watcher

    async def _status_loop(self, lock: InstanceLock, started: float) -> None:
        last = ""
        while True:
            text = self.status_line(self.watcher)
            if text != last:
                self.notifier.status(text)
                last = text
            lock.update(self.health(started))
            # Plugins work on after a catch-up (the detectors replay a long history): give the
            # memory that work freed back, about 1 ms each time.
            release_freed_memory()
            changed = self.watcher.ingest.health_changed
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), STATUS_INTERVAL_S)

    def health(self, started: float) -> DaemonHealth:
        failure = self.watcher.ingest.recording_failure
        return DaemonHealth(
            pid=os.getpid(),
            started=started,
            updated=time.time(),
            recording_failure=failure.reason if failure else None,
            recording_failure_since=failure.since if failure else None,
            unreadable_files=len(self.watcher.ingest.faults),
            unreadable=tuple(
                (path, fault.kind, fault.message, fault.since)
                for path, fault in list(self.watcher.ingest.faults.items())[:LISTED_FAULTS]
            ),
            plugins=self.host.states(),
        )

    def status_line(self, watcher: RunWatcher) -> str:
        runs = len(watcher.runs)
        waiting = len(watcher.missing_runs())
        files = sum(len(r.followers) for r in watcher.runs.values())
        text = f"watching {runs} run(s), {files} file(s)"
        if waiting:
            text += f", waiting for {waiting} run dir(s)"
        if watcher.ingest.faults:
            text += f", {len(watcher.ingest.faults)} file(s) unreadable (see tunewatch status)"
        failure = watcher.ingest.recording_failure
        if failure is not None:
            since = time.strftime("%H:%M:%S", time.localtime(failure.since))
            text = f"CANNOT RECORD since {since}: {failure.reason}; {text}"
        return text


def _catch_up_status(watcher: RunWatcher) -> str:
    batches, runs = watcher.ingest.batches_committed, len(watcher.runs)
    text = f"catching up: {batches:,} batches read from {runs} run(s)"
    failure = watcher.ingest.recording_failure
    return text if failure is None else f"CANNOT RECORD: {failure.reason}; {text}"


def tune_gc() -> None:
    """Make the cyclic GC run less often than its defaults.

    Catching up on a long log allocates millions of short-lived, acyclic objects (parsed lines,
    events); with the default gen-0 threshold of 700 the collector runs thousands of times and
    costs about a third of the catch-up time. Objects from start-up are frozen out of its scans.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _exit_if_stop_hangs(grace_s: float) -> threading.Timer:
    """Exit anyway if stopping takes longer than `grace_s` (a thread stuck in a system call).

    Whatever is committed is consistent (positions are committed with their events), so a
    forced exit loses nothing; a daemon that ignores SIGTERM would be killed by systemd anyway,
    and one started by hand would hang the terminal. A thread timer, not the event loop: the
    loop itself may be what is stuck.
    """

    def force_exit() -> None:
        log.error("stopping did not finish; exiting anyway", grace_s=grace_s)
        os._exit(1)

    timer = threading.Timer(grace_s, force_exit)
    timer.daemon = True
    timer.start()
    return timer


def run_daemon(daemon: Daemon) -> int:
    tune_malloc()
    tune_gc()
    daemon.stop_grace_s = STOP_GRACE_S
    code = asyncio.run(daemon.run())
    # asyncio.run also waited for the executor threads; past this point nothing can hang.
    daemon.stopped()
    return code


def _missing(specs: list[str]) -> list[str]:
    """The run directories or globs that match nothing yet."""
    return [spec for spec in specs if not glob.glob(os.path.expanduser(spec))]
