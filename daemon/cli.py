"""The `tunewatch` command: run the daemon, ask where runs stand, read the recorded history.

Exit codes: 0 success, 1 the command ran but failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from tunewatch.daemon.config import ConfigError, Settings
from tunewatch.daemon.history import KINDS
from tunewatch.daemon.instance_lock import AlreadyRunning
from tunewatch.daemon.store import StateDirError, Store, StoreError
from tunewatch.daemon.text import printable

if TYPE_CHECKING:
    from tunewatch.daemon.plugin import CommandRegistry, PluginCommand

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(text: str) -> float:
    """'90s', '15m', '24h', '7d' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 24h, 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


# The verbs of the core; plugins add theirs through `register_commands` (see daemon/plugin.py).
CORE_COMMANDS = frozenset({"run", "status", "events", "install-service", "plugins", "doctor"})


def build_parser(commands: CommandRegistry | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewatch", description="Watches LLM fine-tuning runs so that you do not have to."
    )
    config_help = "config file (default: ~/.config/tunewatch/config.toml)"
    parser.add_argument("--config", type=Path, help=config_help)
    # After the verb too (`tunewatch status --config x.toml`); SUPPRESS keeps the one given
    # before the verb when none follows it.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[after], help="watch run directories (the daemon)")
    run.add_argument("paths", nargs="*", help="run directories or globs (default: [daemon] runs)")
    run.add_argument("--no-notifications", action="store_true", help="no desktop or remote alerts")
    run.add_argument("--once", action="store_true", help="read everything present, then exit")

    status = sub.add_parser("status", parents=[after], help="where each run stands")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    events = sub.add_parser(
        "events", parents=[after], help="what happened: anomalies, best models, errors..."
    )
    events.add_argument("--run", help="only this run (its name, as `status` shows it)")
    events.add_argument(
        "--kind", action="append", choices=KINDS, help="only this kind (repeatable)"
    )
    events.add_argument("--since", type=parse_duration_s, help="only the last DURATION (e.g. 24h)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")

    install = sub.add_parser(
        "install-service", parents=[after], help="install the systemd user service"
    )
    install.add_argument("--unit-dir", type=Path, help="where to write the unit")

    sub.add_parser("plugins", parents=[after], help="list the plugins that were found")

    doctor = sub.add_parser(
        "doctor", parents=[after], help="check what tunewatch needs, with the fix for each"
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    for command in commands.commands.values() if commands is not None else ():
        verb = sub.add_parser(command.name, parents=[after], help=command.help)
        command.add_arguments(verb)
        verb.set_defaults(plugin_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from tunewatch.daemon.plugin import discover_plugins, plugin_commands

    commands = plugin_commands(discover_plugins(), set(CORE_COMMANDS))
    for error in commands.errors:
        print(f"tunewatch: {printable(error)}", file=sys.stderr)
    args = build_parser(commands).parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"tunewatch: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StateDirError, AlreadyRunning) as exc:
        print(f"tunewatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"tunewatch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK


def _settings(args: argparse.Namespace) -> Settings:
    from tunewatch.daemon.plugin import load_checked_settings

    return load_checked_settings(args.config)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _cmd_run(args)
    if args.command == "status":
        return _cmd_status(args)
    if args.command == "events":
        return _cmd_events(args)
    if args.command == "install-service":
        return _cmd_install_service(args)
    if args.command == "plugins":
        return _cmd_plugins(args)
    if args.command == "doctor":
        return _cmd_doctor(args)
    command: PluginCommand | None = getattr(args, "plugin_command", None)
    if command is not None:
        return _run_plugin_command(command, args)
    raise AssertionError(args.command)


def _run_plugin_command(command: PluginCommand, args: argparse.Namespace) -> int:
    from tunewatch.daemon.plugin import CommandContext, discover_plugins, plugin_config

    def config() -> Any:
        (plugin,) = [p for p in discover_plugins() if p.name == command.plugin]
        return plugin_config(plugin, _settings(args))

    return command.run(CommandContext(args, lambda: _settings(args), config))


def _cmd_run(args: argparse.Namespace) -> int:
    from tunewatch.daemon.logs import configure_logging
    from tunewatch.daemon.service import Daemon, run_daemon

    settings = _settings(args)
    configure_logging(settings.daemon.log_level, settings.daemon.log_format)
    daemon = Daemon(
        settings,
        run_specs=args.paths,
        config_path=args.config,
        notifications=not args.no_notifications,
        once=args.once,
    )
    return run_daemon(daemon)


def _open_store(args: argparse.Namespace) -> Store:
    return Store(_settings(args).state_db(), readonly=True)


def _cmd_status(args: argparse.Namespace) -> int:
    from tunewatch.daemon.instance_lock import read_health
    from tunewatch.daemon.run_status import (
        collect_status,
        daemon_json,
        render_daemon,
        render_status,
    )

    settings = _settings(args)
    store = Store(settings.state_db(), readonly=True)
    try:
        runs = collect_status(store)
    finally:
        store.close()
    running, health = read_health(settings.state_dir())
    if args.json:
        out = {
            "generated": time.time(),
            "daemon": daemon_json(running, health),
            "runs": [r.to_json() for r in runs],
        }
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_daemon(running, health) + "\n" + render_status(runs))
    return EXIT_OK


def _cmd_events(args: argparse.Namespace) -> int:

    store = _open_store(args)
    try:
        rows = store.history(
            run=args.run,
            kinds=args.kind or (),
            since=time.time() - args.since if args.since else None,
            # Periodic resource samples would drown the rest; ask for them by kind.
            exclude_kinds=() if args.kind else ("resources",),
        )
    finally:
        store.close()
    for stored in rows:
        row = stored.row
        if args.json:
            obj = {
                "seq": stored.seq,
                "time": row.time,
                "run": row.run,
                "kind": row.kind,
                "severity": row.severity,
                "summary": row.summary,
                "data": row.data,
            }
            sys.stdout.write(orjson.dumps(obj).decode() + "\n")
            continue
        when = dt.datetime.fromtimestamp(row.time).strftime("%Y-%m-%d %H:%M:%S")
        line = f"{when}  {row.run or '-':<16} {row.kind:<12} {row.severity:<8} {row.summary}"
        sys.stdout.write(printable(line) + "\n")  # a summary quotes log lines and file names
    return EXIT_OK


def _cmd_install_service(args: argparse.Namespace) -> int:
    from tunewatch.daemon.systemd_unit import install_service

    result = install_service(unit_dir=args.unit_dir)
    print(f"Wrote {result.path}")
    if result.backup is not None:
        print(f"(the previous unit was kept as {result.backup})")
    print("Now run:")
    for command in result.commands:
        print(f"  {command}")
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from tunewatch.daemon import doctor
    from tunewatch.daemon.plugin import discover_plugins, plugin_doctor_checks

    settings = _settings(args)
    results = doctor.run_checks(settings, plugin_doctor_checks(discover_plugins(), settings))
    if args.json:
        sys.stdout.write(orjson.dumps(doctor.to_json(results), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        sys.stdout.write(doctor.render_text(results))
    return EXIT_FAILED if any(r.level == "error" for r in results) else EXIT_OK


def _cmd_plugins(args: argparse.Namespace) -> int:
    from tunewatch.daemon.instance_lock import read_health
    from tunewatch.daemon.plugin import discover_plugins, plugin_commands

    running, health = read_health(_settings(args).state_dir())
    states = health.plugins if running and health is not None else {}
    code = EXIT_OK
    plugins = discover_plugins()
    verbs = plugin_commands(plugins, set(CORE_COMMANDS)).commands.values()
    for plugin in plugins:
        fields = [plugin.name]
        if plugin.cls is None:
            fields.append(f"FAILED to load: {plugin.error}")
            code = EXIT_FAILED
        else:
            fields.append(f"{plugin.cls.__module__}.{plugin.cls.__qualname__}")
            state = states.get(plugin.name)
            if state is not None and state.startswith("failed"):
                fields.append(f"FAILED in the running daemon: {state.removeprefix('failed: ')}")
                code = EXIT_FAILED
            elif state is not None:
                fields.append(state)
            names = [verb.name for verb in verbs if verb.plugin == plugin.name]
            if names:
                fields.append("commands: " + ", ".join(names))
        print("\t".join(map(printable, fields)))
    if not running:
        print("(tunewatch is not running: load errors only)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
