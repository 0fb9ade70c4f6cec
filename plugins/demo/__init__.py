"""The demo plugin: `tunewatch demo` shows every feature on a real, tiny training run.

It trains a tiny Llama on CPU under a real `tunewatch run` (every plugin on) and narrates what
happens: metrics, a new best snapshotted and compared, a divergence alert, a flawed data file
validated from the inbox, and a report with its chart at the end.
"""

from __future__ import annotations

from typing import ClassVar

from tunewatch.daemon.plugin import CommandOnlyPlugin, CommandRegistry


class DemoPlugin(CommandOnlyPlugin):
    """Contributes the `demo` verb; nothing runs in the daemon."""

    name: ClassVar[str] = "demo"

    @classmethod
    def register_commands(cls, commands: CommandRegistry) -> None:
        from tunewatch.plugins.demo import command

        commands.add(
            "demo",
            help="watch tunewatch work on a real tiny training run (about two minutes)",
            add_arguments=command.add_arguments,
            run=command.run,
        )
