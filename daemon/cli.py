"""The `tunewatch` command: run the daemon, ask where runs stand, read the recorded history.

Exit codes: 0 success, 1 the command ran but failed, 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from tunewatch.daemon.config import ConfigError, Settings
from tunewatch.daemon.history import KINDS
from tunewatch.daemon.instance_lock import AlreadyRunning
from tunewatch.daemon.store import StateDirError, Store, StoreError
from tunewatch.daemon.text import printable

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

    validate = sub.add_parser("validate", help="check fine-tuning data files before training")
    validate.add_argument("files", nargs="+", type=Path, help="JSONL or JSON-array files")
    validate.add_argument("--verbose", action="store_true", help="every problem, not the first few")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    validate.add_argument("--markdown", action="store_true", help="a Markdown report")
    validate.add_argument("--tokenizer", help="tokenizer or run directory (newest checkpoint)")
    validate.add_argument("--test-file", type=Path, help="held-out file to check for leakage")
    validate.add_argument("--max-seq-len", type=int, help="count examples longer than this")
    validate.add_argument(
        "--min-score", type=int, default=70, help="exit 1 below this score (default 70)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    if args.command == "validate":
        return _cmd_validate(args)
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


def _cmd_plugins(args: argparse.Namespace) -> int:
    from tunewatch.daemon.instance_lock import read_health
    from tunewatch.daemon.plugin import discover_plugins

    running, health = read_health(_settings(args).state_dir())
    states = health.plugins if running and health is not None else {}
    code = EXIT_OK
    for plugin in discover_plugins():
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
        print("\t".join(map(printable, fields)))
    if not running:
        print("(tunewatch is not running: load errors only)")
    return code


def _cmd_validate(args: argparse.Namespace) -> int:
    from tunewatch.plugins.validate import render
    from tunewatch.plugins.validate.reader import UnreadableInput
    from tunewatch.plugins.validate.tokens import TokenizerNotFound
    from tunewatch.plugins.validate.validate import validate_file

    reports, code = [], EXIT_OK
    for path in args.files:
        try:
            report = validate_file(
                path,
                tokenizer=args.tokenizer,
                test_file=args.test_file,
                max_seq_len=args.max_seq_len,
                progress=_validate_progress(path),
            )
        except (UnreadableInput, TokenizerNotFound) as exc:
            print(f"tunewatch validate: {printable(str(exc))}", file=sys.stderr)
            code = EXIT_USAGE
            continue
        reports.append(report)
        if report.score < args.min_score and code == EXIT_OK:
            code = EXIT_FAILED
        if args.markdown:
            sys.stdout.write(render.render_markdown(report, verbose=args.verbose))
        elif not args.json:
            sys.stdout.write(render.render_text(report, verbose=args.verbose))
    if args.json:
        sys.stdout.write(render.dumps_json(reports))
    return code


def _validate_progress(path: Path) -> Callable[[int], None] | None:
    """A percentage on stderr, only for large files and only when a person is watching."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    if not sys.stderr.isatty() or size < 64 << 20:
        return None

    def show(done: int) -> None:
        sys.stderr.write(f"\r{path.name}: {100 * done // size}%")
        if done >= size:
            sys.stderr.write("\n")

    return show


if __name__ == "__main__":
    raise SystemExit(main())
