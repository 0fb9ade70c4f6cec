"""CLI verbs contributed by plugins (`register_commands`): the core CLI imports no plugin."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.fake_distribution import installed_distribution

from tunewatch.daemon.cli import CORE_COMMANDS, main
from tunewatch.daemon.plugin import discover_plugins, plugin_commands

ROOT = Path(__file__).resolve().parents[2]

PLUGIN_SOURCE = """
from dataclasses import dataclass

@dataclass(frozen=True)
class Config:
    enabled: bool = True
    greeting: str = "hello"

class Greeter:
    name = "greeter"
    Config = Config
    def __init__(self, ctx): self.ctx = ctx
    async def start(self): pass
    async def stop(self): pass

    @classmethod
    def register_commands(cls, commands):
        def add_arguments(parser):
            parser.add_argument("who")
            parser.add_argument("--shout", action="store_true")

        def run(ctx):
            text = f"{ctx.config().greeting}, {ctx.args.who}"
            print(text.upper() if ctx.args.shout else text)
            return 3

        commands.add("greet", help="say hello", add_arguments=add_arguments, run=run)

class Squatter:
    name = "squatter"
    def __init__(self, ctx): pass
    async def start(self): pass
    async def stop(self): pass

    @classmethod
    def register_commands(cls, commands):
        noop = lambda parser: None
        commands.add("status", help="mine now", add_arguments=noop, run=lambda ctx: 0)
        commands.add("greet", help="mine too", add_arguments=noop, run=lambda ctx: 0)

class Broken:
    name = "broken"
    def __init__(self, ctx): pass
    async def start(self): pass
    async def stop(self): pass

    @classmethod
    def register_commands(cls, commands):
        raise RuntimeError("oops")
"""


@pytest.fixture
def third_party(tmp_path: Path) -> Iterator[Path]:
    """An installed distribution whose plugins add a verb, squat on taken ones, and break."""
    entry_points = {
        "greeter": "twverbs:Greeter",
        "squatter": "twverbs:Squatter",
        "broken": "twverbs:Broken",
    }
    with installed_distribution(tmp_path, "twverbs", {"twverbs": PLUGIN_SOURCE}, entry_points):
        yield tmp_path


def test_a_plugin_verb_runs_with_its_arguments_and_its_config_section(
    third_party: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[greeter]\ngreeting = "hi"\n')
    assert main(["--config", str(config), "greet", "Ada", "--shout"]) == 3
    out, err = capsys.readouterr()
    assert out == "HI, ADA\n"
    # The squatter and the broken hook are reported; they take nothing away from anyone.
    assert "plugin squatter: command 'status' is already provided by tunewatch" in err
    assert "plugin squatter: command 'greet' is already provided by greeter" in err
    assert "plugin broken: register_commands failed: RuntimeError: oops" in err


def test_taken_names_are_refused_and_a_broken_hook_keeps_the_other_verbs(
    third_party: Path,
) -> None:
    registry = plugin_commands(discover_plugins(), set(CORE_COMMANDS))
    assert registry.commands["greet"].plugin == "greeter"
    assert "status" not in registry.commands
    assert registry.commands["validate"].plugin == "validate"
    assert len(registry.errors) == 3


def test_plugins_lists_the_verbs_each_plugin_adds(
    third_party: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n')
    main(["--config", str(config), "plugins"])
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("greeter\t") and "commands: greet" in line for line in lines)
    assert any(line.startswith("validate\t") and "commands: validate" in line for line in lines)


def test_the_built_in_verbs_come_from_their_plugins() -> None:
    registry = plugin_commands(discover_plugins(), set(CORE_COMMANDS))
    assert {name: c.plugin for name, c in registry.commands.items()} == {
        "validate": "validate",
        "compare": "compare",
        "report": "report",
        "demo": "demo",
        "alertmanager": "alertmanager",
    }
    assert registry.errors == []


def test_the_core_imports_no_plugin() -> None:
    offenders = []
    for path in sorted((ROOT / "daemon").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("tunewatch.plugins")]
    assert offenders == []
