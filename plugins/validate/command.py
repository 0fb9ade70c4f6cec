"""`tunewatch validate FILE...`: the validation report of data files, from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from tunewatch.daemon.plugin import CommandContext
from tunewatch.daemon.text import printable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="JSONL or JSON-array files")
    parser.add_argument("--verbose", action="store_true", help="every problem, not the first few")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--markdown", action="store_true", help="a Markdown report")
    parser.add_argument("--tokenizer", help="tokenizer or run directory (newest checkpoint)")
    parser.add_argument("--test-file", type=Path, help="held-out file to check for leakage")
    parser.add_argument("--max-seq-len", type=int, help="count examples longer than this")
    parser.add_argument(
        "--min-score", type=int, default=70, help="exit 1 below this score (default 70)"
    )


def run(ctx: CommandContext) -> int:
    from tunewatch.plugins.validate import render
    from tunewatch.plugins.validate.reader import UnreadableInput
    from tunewatch.plugins.validate.tokens import TokenizerNotFound
    from tunewatch.plugins.validate.validate import validate_file

    args = ctx.args
    reports, code = [], EXIT_OK
    for path in args.files:
        try:
            report = validate_file(
                path,
                tokenizer=args.tokenizer,
                test_file=args.test_file,
                max_seq_len=args.max_seq_len,
                progress=_progress(path),
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


def _progress(path: Path) -> Callable[[int], None] | None:
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
