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

import orjson

from tunewatch.daemon.config import ConfigError, Settings
from tunewatch.daemon.history import KINDS
from tunewatch.daemon.store import Store, StoreError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration_s(text: str) -> float:
    """'90s', '15m', '24h', '7d' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 24h, 7d)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewatch", description="Watches LLM fine-tuning runs so that you do not have to."
    )
    parser.add_argument(
        "--config", type=Path, help="config file (default: ~/.config/tunewatch/config.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="watch run directories (the daemon)")
    run.add_argument("paths", nargs="*", help="run directories or globs (default: [daemon] runs)")
    run.add_argument("--no-notifications", action="store_true", help="no desktop or remote alerts")
    run.add_argument("--once", action="store_true", help="read everything present, then exit")

    status = sub.add_parser("status", help="where each run stands")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    events = sub.add_parser("events", help="what happened: anomalies, best models, errors...")
    events.add_argument("--run", help="only this run (its name, as `status` shows it)")
    events.add_argument(
        "--kind", action="append", choices=KINDS, help="only this kind (repeatable)"
    )
    events.add_argument("--since", type=parse_duration_s, help="only the last DURATION (e.g. 24h)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")

    install = sub.add_parser("install-service", help="install the systemd user service")
    install.add_argument("--unit-dir", type=Path, help="where to write the unit")

    sub.add_parser("plugins", help="list the plugins that were found")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ConfigError as exc:
        print(f"tunewatch: config error: {exc}", file=sys.stderr)
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
        return _cmd_plugins()
    raise AssertionError(args.command)


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
    from tunewatch.daemon.run_status import collect_status, render_status

    store = _open_store(args)
    try:
        runs = collect_status(store)
    finally:
        store.close()
    if args.json:
        out = {"generated": time.time(), "runs": [r.to_json() for r in runs]}
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(render_status(runs))
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
        sys.stdout.write(
            f"{when}  {row.run or '-':<16} {row.kind:<12} {row.severity:<8} {row.summary}\n"
        )
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


def _cmd_plugins() -> int:
    from tunewatch.daemon.plugin import discover_plugins

    for plugin in discover_plugins():
        if plugin.cls is None:
            print(f"{plugin.name}\tFAILED: {plugin.error}")
        else:
            print(f"{plugin.name}\t{plugin.cls.__module__}.{plugin.cls.__qualname__}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
