"""`tunewatch compare A B`: compare two snapshots by hand, with the same figures and verdict the
daemon produces after each new best."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tunewatch.daemon.plugin import CommandContext
from tunewatch.daemon.text import printable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", type=Path, help="snapshot A (a save_pretrained or checkpoint dir)")
    parser.add_argument("b", type=Path, help="snapshot B")
    parser.add_argument("--test-file", type=Path, help="JSONL/JSON test items (prompt, answer)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: [compare]")
    parser.add_argument("--max-new-tokens", type=int, help="tokens generated per prompt")
    parser.add_argument("--repeats", type=int, help="timed repeats per snapshot")
    parser.add_argument("--examples", type=int, help="side-by-side examples shown")
    parser.add_argument("--json", action="store_true", help="every figure as JSON")


def run(ctx: CommandContext) -> int:
    from tunewatch.plugins.compare import render
    from tunewatch.plugins.compare.child import compare
    from tunewatch.plugins.compare.snapshot_files import SnapshotRefused

    args = ctx.args
    try:
        from tunewatch.plugins.compare.engine import DeviceBusy
    except ImportError as exc:  # a broken torch or transformers install
        print(f"tunewatch compare: cannot load torch/transformers: {exc}", file=sys.stderr)
        return EXIT_USAGE
    request = request_from(ctx.config(), args)
    try:
        with _progress() as progress:
            comparison = compare(request, progress)
    except SnapshotRefused as exc:
        print(f"tunewatch compare: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except DeviceBusy as exc:
        print(f"tunewatch compare: {printable(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        sys.stdout.write(render.dumps_json(comparison))
    else:
        render.render_terminal(comparison, _console(), examples=request.examples)
    return EXIT_OK


def request_from(config: Any, args: argparse.Namespace) -> Any:
    """The request: the command line's choices over the [compare] section's."""
    test_file = args.test_file or (Path(config.test_file) if config.test_file else None)
    return config.request(
        str(args.a),
        str(args.b),
        str(test_file) if test_file else None,
        device=args.device,
        max_new_tokens=args.max_new_tokens,
        repeats=args.repeats,
        examples=args.examples,
        when_gpu_short="cpu",  # a person asked for it now: never defer
    )


def _console() -> Any:
    from rich.console import Console

    return Console()


class _progress:
    """Progress bars on stderr while models load and generate, when a person is watching."""

    def __enter__(self) -> Any:
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        if not sys.stderr.isatty():
            return None
        self._bar.start()
        self._tasks: dict[str, Any] = {}

        def update(what: str, done: int, total: int) -> None:
            task = self._tasks.get(what)
            if task is None:
                task = self._tasks[what] = self._bar.add_task(printable(what), total=total)
            self._bar.update(task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()
