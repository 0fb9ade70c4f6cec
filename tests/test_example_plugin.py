"""The example plugin of docs/example_plugin, installed as a distribution and run: what the
plugin guide promises a third-party plugin works."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from fixtures.fake_distribution import installed_distribution

from tunewatch.daemon.bus import EventBus
from tunewatch.daemon.cli import main
from tunewatch.daemon.config import load_settings
from tunewatch.daemon.events import AnomalyDetected
from tunewatch.daemon.plugin import PluginContext, discover_plugins, plugin_config
from tunewatch.daemon.store import AsyncStore, Store

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example_plugin"
MODULE = "tunewatch_anomaly_counter"


@pytest.fixture
def example_installed(tmp_path: Path) -> Iterator[None]:
    """Installed from its own files: its module, and the entry points its pyproject declares."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    entry_points = project["project"]["entry-points"]["tunewatch.plugins"]
    source = (EXAMPLE / f"{MODULE}.py").read_text()
    (tmp_path / "site").mkdir()
    with installed_distribution(
        tmp_path / "site", "tunewatch_anomaly_counter", {MODULE: source}, entry_points
    ):
        yield


def anomaly(run: str, severity: str, step: int) -> AnomalyDetected:
    return AnomalyDetected(run, step, "loss_spike", severity, "loss", 9.0, 1.0, "spike")  # type: ignore[arg-type]


async def test_the_example_plugin_is_found_configured_and_counts_anomalies(
    example_installed: None, tmp_path: Path
) -> None:
    (found,) = [p for p in discover_plugins() if p.name == "anomaly_counter"]
    assert found.cls is not None
    config_file = tmp_path / "config.toml"
    config_file.write_text("[anomaly_counter]\ncritical_only = true\n")
    settings = load_settings(config_file, [p.name for p in discover_plugins()])
    bus = EventBus()
    store = await AsyncStore.open(tmp_path / "state.db")
    ctx = PluginContext(
        name=found.name,
        bus=bus,
        store=store,
        config=plugin_config(found, settings),
        settings=settings,
        log=structlog.get_logger("example"),
        run_dirs={},
    )
    plugin = found.cls(ctx)
    await plugin.start()
    bus.publish(anomaly("run-a", "critical", 10))
    bus.publish(anomaly("run-a", "normal", 11))  # not counted: critical_only
    bus.publish(anomaly("run-b", "critical", 12))
    await bus.drain()
    assert dict(plugin.counts) == {"run-a": 1, "run-b": 1}  # type: ignore[attr-defined]
    await plugin.stop()
    await bus.close()
    await store.close()


def test_the_example_plugin_verb_reads_the_history(
    example_installed: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    store = Store(state / "state.db")
    store.ensure_run("/r/a", "run-a")
    store.record_many([anomaly("run-a", "critical", 10), anomaly("run-a", "normal", 20)])
    store.close()
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[daemon]\nstate_dir = "{state}"\n')
    assert main(["--config", str(config_file), "anomaly-counts"]) == 0
    assert capsys.readouterr().out == "run-a\t2\n"
