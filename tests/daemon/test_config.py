"""Settings: defaults, the documented config.toml, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tunewatch.daemon.config import ConfigError, Settings, load_settings
from tunewatch.daemon.plugin import (
    PluginConfig,
    discover_plugins,
    load_checked_settings,
    plugin_config,
)

REPO = Path(__file__).resolve().parents[2]
PLUGINS = [p.name for p in discover_plugins()]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_config_toml_documents_exactly_the_defaults() -> None:
    shipped = load_settings(REPO / "config.toml", PLUGINS)
    defaults = Settings()
    assert shipped.daemon == defaults.daemon
    assert shipped.sources == defaults.sources
    assert shipped.paths == defaults.paths
    for plugin in discover_plugins():
        assert plugin.cls is not None
        assert plugin_config(plugin, shipped) == plugin.cls.Config(), plugin.name


def test_every_shipped_key_has_a_comment_above_it() -> None:
    lines = (REPO / "config.toml").read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#") or lines[i - 1].startswith("["), line


def test_no_config_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_settings(None, PLUGINS).daemon == Settings().daemon


def test_state_db_follows_xdg_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert Settings().state_db() == tmp_path / "state" / "tunewatch" / "state.db"
    custom = load_settings(write(tmp_path, '[daemon]\nstate_dir = "~/x"\n'), PLUGINS)
    assert custom.state_db() == Path("~/x").expanduser() / "state.db"


def test_values_are_typed(tmp_path: Path) -> None:
    s = load_settings(
        write(tmp_path, '[daemon]\nruns = "~/runs/*"\nrescan_interval_s = 5\n'), PLUGINS
    )
    assert s.daemon.runs == ("~/runs/*",)
    assert s.daemon.rescan_interval_s == 5.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[daemon]\nrescan_interval_s = "fast"\n',
            "[daemon] rescan_interval_s: expected a non-negative number, got string 'fast'",
        ),
        ("[daemon]\nrescan_intervall_s = 3\n", "[daemon] unknown key 'rescan_intervall_s'"),
        ("[deamon]\nruns = []\n", "unknown section [deamon]"),
        (
            '[daemon]\nlog_level = "loud"\n',
            "[daemon] log_level: expected one of 'debug', 'info', 'warning', 'error'",
        ),
        (
            "[sources]\ntrainer_state = 1\n",
            "[sources] trainer_state: expected true or false, got integer 1",
        ),
        ('[sources]\ntext_regex = "(unclosed"\n', "[sources] text_regex:"),
        ('[sources]\ntext_regex = "loss=(?P<loss>\\\\S+)"\n', "step"),
        ("[daemon]\nruns = []\n", "[daemon] runs: list at least one run directory"),
        (
            "[resources]\ninterval_s = -1\n",
            "[resources] interval_s: expected a non-negative number",
        ),
        ("[daemon\n", "not valid TOML"),
    ],
)
def test_mistakes_name_the_key_and_what_was_expected(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_checked_settings(write(tmp_path, text))
    assert message in str(info.value)
    assert str(tmp_path / "config.toml") in str(info.value)


def test_a_state_dir_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        load_settings(write(tmp_path, f'[daemon]\nstate_dir = "{tmp_path}/afile/sub"\n'), PLUGINS)


def test_an_explicit_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml", PLUGINS)


def test_plugin_sections_accept_the_common_enabled_key() -> None:
    assert PluginConfig().enabled is True


def test_the_cli_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "[daemon]\nwatch_step_ms = 1.5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "tunewatch.daemon", "--config", str(path), "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "[daemon] watch_step_ms: expected a non-negative integer, got number 1.5" in proc.stderr
