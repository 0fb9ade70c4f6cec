"""The plugin API: entry-point discovery, config sections, isolated failures, reverse-order stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import structlog
from fixtures.fake_distribution import installed_distribution
from structlog.testing import capture_logs

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.config import ConfigError, settings_from_mapping
from tunewatch.daemon.events import CaughtUp, Event
from tunewatch.daemon.plugin import (
    PluginConfig,
    PluginContext,
    PluginHost,
    discover_plugins,
    plugin_config,
)
from tunewatch.daemon.store import AsyncStore


@pytest.fixture
def fake_distribution(tmp_path: Path) -> Iterator[Path]:
    """A real installed distribution on sys.path whose entry points name one good, one broken."""
    source = (
        "from dataclasses import dataclass\n"
        "@dataclass(frozen=True)\n"
        "class Config:\n"
        "    enabled: bool = True\n"
        "    greeting: str = 'hi'\n"
        "class Hello:\n"
        "    name = 'hello'\n"
        "    Config = Config\n"
        "    def __init__(self, ctx): self.ctx = ctx\n"
        "    async def start(self): pass\n"
        "    async def stop(self): pass\n"
    )
    entry_points = {"hello": "twfake:Hello", "broken": "twfake_missing_module:Nope"}
    with installed_distribution(tmp_path, "twfake", {"twfake": source}, entry_points):
        yield tmp_path


def test_built_in_plugins_are_registered_as_entry_points() -> None:
    names = {p.name: p for p in discover_plugins()}
    assert "resources" in names
    assert names["resources"].cls is not None


def test_third_party_plugins_load_and_broken_ones_are_reported(fake_distribution: Path) -> None:
    found = {p.name: p for p in discover_plugins()}
    assert found["hello"].cls is not None and found["hello"].cls.__name__ == "Hello"
    assert found["broken"].cls is None
    assert "twfake_missing_module" in (found["broken"].error or "")


def test_plugin_sections_are_validated_with_the_plugin_config(fake_distribution: Path) -> None:
    hello = next(p for p in discover_plugins() if p.name == "hello")
    ok = settings_from_mapping({"hello": {"greeting": "hey"}}, "cfg", ["hello"])
    assert plugin_config(hello, ok).greeting == "hey"
    bad = settings_from_mapping({"hello": {"greting": "hey"}}, "cfg", ["hello"])
    with pytest.raises(ConfigError, match=r"\[hello\] unknown key 'greting'"):
        plugin_config(hello, bad)


def test_only_the_named_plugins_load_when_asked(
    fake_distribution: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEWATCH_LOAD_PLUGINS", "hello")
    assert [p.name for p in discover_plugins()] == ["hello"]


class Recorder:
    name: ClassVar[str] = "recorder"
    Config: ClassVar[type[PluginConfig]] = PluginConfig

    def __init__(self, label: str, log: list[str], fail_start: bool = False) -> None:
        self.name = label  # type: ignore[misc]
        self.log = log
        self.fail_start = fail_start

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError("cannot start")
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")


async def test_a_plugin_that_fails_to_start_does_not_stop_the_others() -> None:
    log: list[str] = []
    host = PluginHost()
    await host.start(Recorder("a", log))
    await host.start(Recorder("b", log, fail_start=True))
    await host.start(Recorder("c", log))
    assert host.failed == {"b": "RuntimeError: cannot start"}
    await host.stop()
    assert log == ["start a", "start c", "stop c", "stop a"]


async def test_the_context_resolves_per_run_and_shared_folders(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "state.db")
    settings = settings_from_mapping({}, "cfg")
    ctx = PluginContext(
        name="x",
        bus=EventBus(),
        store=store,
        config=PluginConfig(),
        settings=settings,
        log=None,
        run_dirs={"run-a": tmp_path / "run-a"},
    )
    assert ctx.run_path(tmp_path / "run-a", "inbox") == tmp_path / "run-a" / "inbox"
    assert ctx.run_path(tmp_path / "run-a", "/srv/inbox") == Path("/srv/inbox")
    await store.close()
    await asyncio.sleep(0)


async def test_a_background_task_that_dies_is_reported_at_once(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "state.db")
    host = PluginHost()
    with capture_logs() as logs:
        ctx = PluginContext(
            name="boom",
            bus=EventBus(),
            store=store,
            config=PluginConfig(),
            settings=settings_from_mapping({}, "cfg"),
            log=structlog.get_logger("test").bind(plugin="boom"),
            run_dirs={},
            on_failure=host.task_failed,
        )

        async def work() -> None:
            raise ValueError("no such column")

        task = ctx.spawn(work(), name="scan")
        with pytest.raises(ValueError):
            await task
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
    assert host.failed == {"boom": "boom:scan failed: ValueError: no such column"}
    assert host.states() == {"boom": "failed: boom:scan failed: ValueError: no such column"}
    assert [entry["event"] for entry in logs] == ["plugin task failed; this plugin no longer works"]
    await store.close()


async def test_a_reported_failure_shows_until_the_plugin_says_it_works_again() -> None:
    host = PluginHost()
    await host.start(Recorder("exporter", []))
    host.task_failed("exporter", "cannot listen on 127.0.0.1:9464")
    host.task_failed("exporter", "still cannot listen")  # the first reason is the one shown
    assert host.states() == {"exporter": "failed: cannot listen on 127.0.0.1:9464"}
    host.task_recovered("exporter")
    assert host.states() == {"exporter": "running"}
    await host.stop()


async def test_what_a_starting_plugin_publishes_reaches_plugins_started_after_it() -> None:
    bus = EventBus()
    seen: list[Event] = []
    with bus.held():
        bus.publish(CaughtUp(last_seq=7))  # e.g. an alert from the anomaly plugin's replay
        bus.subscribe(Event, seen.append)  # e.g. the notify plugin, which starts later
    await bus.drain(1.0)
    assert [(type(e), getattr(e, "last_seq", None)) for e in seen] == [(CaughtUp, 7)]
    await bus.close()
