"""The validate plugin: `tunewatch validate FILE`, and the validation library behind it.

It checks fine-tuning data files: formats, errors, duplicates, leakage, tokens, a score. The
inbox plugin runs the same library on files dropped into a run's inbox.
"""

from __future__ import annotations

from typing import ClassVar

from tunewatch.daemon.plugin import CommandOnlyPlugin, CommandRegistry


class ValidatePlugin(CommandOnlyPlugin):
    """Contributes the `validate` verb; nothing runs in the daemon (the inbox plugin does)."""

    name: ClassVar[str] = "validate"

    @classmethod
    def register_commands(cls, commands: CommandRegistry) -> None:
        from tunewatch.plugins.validate import command

        commands.add(
            "validate",
            help="check fine-tuning data files before training",
            add_arguments=command.add_arguments,
            run=command.run,
        )
