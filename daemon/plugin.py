"""The plugin API: discovery through entry points, a context per plugin, isolated start and stop,
and CLI verbs contributed by plugins.

Built-in plugins are registered in the `tunewatch.plugins` entry-point group exactly like a
third-party one. A plugin that fails to load or start is reported and skipped; the others run.
Set TUNEWATCH_LOAD_PLUGINS to a comma-separated list of names to load only those.

A plugin adds `tunewatch <verb>` commands with a `register_commands(commands)` classmethod (as
datasette's `register_commands` hook): the core CLI imports no plugin, and `validate` or
`compare` come from their plugins exactly as a third-party verb would.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar, Protocol

import structlog

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import ConfigError, Settings, load_settings, parse_section
from tunewatch.daemon.instance_lock import DaemonHealth
from tunewatch.daemon.store import AsyncStore

ENTRY_POINT_GROUP = "tunewatch.plugins"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """The section every plugin accepts at least; plugins extend it with their own fields."""

    enabled: bool = True


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What a plugin gets from the daemon."""

    name: str
    bus: EventBus
    store: AsyncStore
    config: Any  # an instance of the plugin's `Config` dataclass
    settings: Settings
    log: Any  # a structlog logger bound with plugin=<name>
    run_dirs: Mapping[str, Path]  # run name -> directory, as known at start
    notifications: bool = True
    # Told (plugin name, what failed) when a task started with `spawn` dies of an exception, or
    # when a plugin reports a failure of its own (a port taken, a server unreachable)...
    on_failure: Callable[[str, str], None] | None = None
    # ...and told (plugin name) when such a reported failure is over, so that `status` and
    # `tunewatch plugins` stop saying FAILED about a plugin that works again.
    on_recovered: Callable[[str], None] | None = None
    # The daemon's own health now (recording failure, unreadable files, plugin states), read
    # only; None outside a daemon. The Prometheus exporter publishes it.
    health: Callable[[], DaemonHealth] | None = None

    def run_path(self, run_dir: Path, configured: str) -> Path:
        """A per-run folder such as inbox/ or reports/: relative paths live in the run directory."""
        path = Path(configured).expanduser()
        return path if path.is_absolute() else run_dir / path

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start a background task of this plugin; cancel it in `stop`.

        If it dies of an exception, that is logged at once (with its traceback) and shown by
        `tunewatch plugins` and `status`: a plugin that silently stopped working would leave
        the person trusting an alert that never comes.
        """
        task = asyncio.get_running_loop().create_task(work, name=f"{self.name}:{name}")
        task.add_done_callback(self._report_failure)
        return task

    def _report_failure(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        (self.log or log).error(
            "plugin task failed; this plugin no longer works", task=task.get_name(), exc_info=exc
        )
        if self.on_failure is not None:
            self.on_failure(self.name, f"{task.get_name()} failed: {type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a plugin's CLI verb gets: its parsed arguments, and the config on demand (a verb
    that needs none must work without a valid config file)."""

    args: argparse.Namespace
    settings: Callable[[], Settings]  # the whole config, every plugin section validated
    config: Callable[[], Any]  # this plugin's own section (its `Config` dataclass)


@dataclass(frozen=True, slots=True)
class PluginCommand:
    """A verb a plugin contributes: `tunewatch <name> ...`."""

    plugin: str
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[CommandContext], int]  # an exit code: 0 ok, 1 failed, 2 usage error


class CommandRegistry:
    """Collects the verbs of every plugin; a name already taken (by the core or an earlier
    plugin) is refused with the reason, and the other verbs still work."""

    def __init__(self, reserved: set[str]) -> None:
        self._reserved = set(reserved)
        self.commands: dict[str, PluginCommand] = {}
        self.errors: list[str] = []
        self._plugin = ""

    def for_plugin(self, plugin: str) -> CommandRegistry:
        self._plugin = plugin
        return self

    def add(
        self,
        name: str,
        *,
        help: str,
        add_arguments: Callable[[argparse.ArgumentParser], None],
        run: Callable[[CommandContext], int],
    ) -> None:
        """Add `tunewatch <name>`: `add_arguments` declares its options, `run` carries it out."""
        if name in self._reserved or name in self.commands:
            owner = self.commands[name].plugin if name in self.commands else "tunewatch"
            self.errors.append(
                f"plugin {self._plugin}: command {name!r} is already provided by {owner}"
            )
            return
        self.commands[name] = PluginCommand(self._plugin, name, help, add_arguments, run)


def plugin_commands(plugins: list[DiscoveredPlugin], reserved: set[str]) -> CommandRegistry:
    """The verbs of every loaded plugin, and why any could not be added."""
    registry = CommandRegistry(reserved)
    for plugin in plugins:
        register = getattr(plugin.cls, "register_commands", None) if plugin.cls else None
        if register is None:
            continue
        try:
            register(registry.for_plugin(plugin.name))
        except Exception as exc:  # a broken third-party hook must not take the CLI down
            registry.errors.append(
                f"plugin {plugin.name}: register_commands failed: {type(exc).__name__}: {exc}"
            )
    return registry


def plugin_doctor_checks(
    plugins: list[DiscoveredPlugin], settings: Settings
) -> list[Callable[[], list[Any]]]:
    """Each loaded plugin's `doctor_checks`, bound to its own config section and the settings."""
    checks: list[Callable[[], list[Any]]] = []
    for plugin in plugins:
        hook = getattr(plugin.cls, "doctor_checks", None) if plugin.cls else None
        if hook is None:
            continue
        config = plugin_config(plugin, settings)

        def check(hook: Any = hook, config: Any = config) -> list[Any]:
            return list(hook(config, settings))

        check.__qualname__ = f"plugin {plugin.name}"
        checks.append(check)
    return checks


class Plugin(Protocol):
    """A unit of behaviour that subscribes to the bus. One docstring line per hook.

    Optional classmethods:
    - `register_commands(cls, commands: CommandRegistry) -> None` adds CLI verbs with
      `commands.add(...)`;
    - `doctor_checks(cls, config, settings) -> list[CheckResult]` (tunewatch.daemon.doctor)
      adds what `tunewatch doctor` checks for this plugin.
    """

    name: ClassVar[str]
    Config: ClassVar[type[Any]]

    def __init__(self, ctx: PluginContext) -> None:
        """Keep the context; do no I/O here."""

    async def start(self) -> None:
        """Subscribe and start background tasks; raise to report a failed start."""

    async def stop(self) -> None:
        """Cancel tasks and release resources; called in reverse start order."""


class CommandOnlyPlugin:
    """Base of a plugin that only adds CLI verbs (`register_commands`): nothing of it runs in
    the daemon."""

    Config: ClassVar[type[Any]] = PluginConfig

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class DiscoveredPlugin:
    name: str
    cls: type[Plugin] | None
    error: str | None = None


def discover_plugins() -> list[DiscoveredPlugin]:
    """Every plugin registered in the entry-point group, loaded or with the reason it failed."""
    wanted = os.environ.get("TUNEWATCH_LOAD_PLUGINS")
    only = {n.strip() for n in wanted.split(",")} if wanted else None
    found: list[DiscoveredPlugin] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if only is not None and ep.name not in only:
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken third-party plugin must not stop the daemon
            found.append(DiscoveredPlugin(ep.name, None, f"{type(exc).__name__}: {exc}"))
            continue
        found.append(DiscoveredPlugin(ep.name, cls))
    return found


def plugin_config(plugin: DiscoveredPlugin, settings: Settings) -> Any:
    """The plugin's validated config section; raises ConfigError like the core sections."""
    assert plugin.cls is not None
    raw = settings.plugins.get(plugin.name, {})
    config_cls = getattr(plugin.cls, "Config", PluginConfig)
    if not dataclasses.is_dataclass(config_cls):
        raise ConfigError(f"plugin {plugin.name}: Config must be a dataclass")
    return parse_section(config_cls, raw, plugin.name, settings.origin)


def load_checked_settings(path: Path | None) -> Settings:
    """Load the config and validate every plugin's section too, so mistakes surface at start."""
    plugins = discover_plugins()
    settings = load_settings(path, [p.name for p in plugins])
    for plugin in plugins:
        if plugin.cls is not None:
            plugin_config(plugin, settings)
    return settings


class PluginHost:
    """Starts plugins in order, isolates their failures, stops them in reverse order."""

    def __init__(self) -> None:
        self.started: list[Plugin] = []
        self.failed: dict[str, str] = {}  # plugin -> why it failed (to load, start or run)

    def task_failed(self, plugin: str, why: str) -> None:
        """A plugin's background task died (see `PluginContext.spawn`), or the plugin reported a
        failure; the first reason is kept until it recovers."""
        self.failed.setdefault(plugin, why)

    def task_recovered(self, plugin: str) -> None:
        """The plugin reported that what failed works again; one that failed to load or start
        never calls this (it is not running)."""
        self.failed.pop(plugin, None)

    def states(self) -> dict[str, str]:
        """Plugin -> "running", or "failed: <why>"."""
        states = {plugin.name: "running" for plugin in self.started}
        states.update({name: f"failed: {why}" for name, why in self.failed.items()})
        return states

    async def start(self, plugin: Plugin) -> None:
        try:
            await plugin.start()
        except Exception as exc:
            self.failed[plugin.name] = f"{type(exc).__name__}: {exc}"
            log.exception("plugin failed to start; the others keep running", plugin=plugin.name)
            return
        self.started.append(plugin)
        log.info("plugin started", plugin=plugin.name)

    async def stop(self) -> None:
        while self.started:
            plugin = self.started.pop()
            try:
                await plugin.stop()
            except Exception:
                log.exception("plugin failed to stop cleanly", plugin=plugin.name)
