"""`tunewatch report`: write a report now from the store (what the daemon writes each morning)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from tunewatch.daemon.plugin import CommandContext
from tunewatch.daemon.text import printable, printable_lines

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tunewatch.daemon.cli import parse_duration_s

    parser.add_argument("--print", action="store_true", help="print the Markdown report too")
    parser.add_argument(
        "--since", type=parse_duration_s, help="the period covered (default: [report] period)"
    )
    parser.add_argument("--out", type=Path, help="where to write it (default: [report] out_dir)")
    parser.add_argument("--json", action="store_true", help="the report's figures as JSON")


def run(ctx: CommandContext) -> int:
    from tunewatch.daemon.store import StateDirError
    from tunewatch.plugins.report import out_dir
    from tunewatch.plugins.report.generate import generate_report, report_json

    args, config, settings = ctx.args, ctx.config(), ctx.settings()
    now = dt.datetime.now().astimezone()
    period_s = args.since if args.since is not None else config.period_hours * 3600.0
    target = args.out if args.out is not None else out_dir(config, settings.state_dir())
    if not settings.state_db().is_file():
        raise StateDirError(
            f"{settings.state_db()}: no state database yet (has `tunewatch run` started?)"
        )
    written = generate_report(
        settings.state_db(),
        target,
        since=now.timestamp() - period_s,
        until=now.timestamp(),
        stamp=now,
    )
    if args.json:
        sys.stdout.write(json.dumps(report_json(written.report), indent=1) + "\n")
        return EXIT_OK
    if args.print:
        sys.stdout.write(printable_lines(written.markdown.read_text(encoding="utf-8")))
    print(f"Report written: {written.markdown}", file=sys.stderr if args.print else sys.stdout)
    print(printable(written.health), file=sys.stderr if args.print else sys.stdout)
    return EXIT_OK
