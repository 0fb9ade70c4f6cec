"""What `tunewatch doctor` checks for the inbox: the tokenizer its token counts come from."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from tunewatch.daemon.config import Settings
from tunewatch.daemon.doctor import CheckResult


def checks(config: Any, settings: Settings) -> list[CheckResult]:
    from tunewatch.plugins.validate.tokens import TokenizerNotFound, resolve_tokenizer

    name = "tokenizer for validation"
    if config.tokenizer:
        try:
            found = resolve_tokenizer(Path(config.tokenizer).expanduser())
        except TokenizerNotFound as exc:
            return [CheckResult(name, "error", str(exc), "fix [inbox] tokenizer")]
        return [CheckResult(name, "ok", f"[inbox] tokenizer: {found}")]
    runs = [
        Path(p) for pattern in settings.daemon.runs for p in glob.glob(os.path.expanduser(pattern))
    ]
    for run in runs:
        try:
            found = resolve_tokenizer(run)
        except TokenizerNotFound:
            continue
        return [CheckResult(name, "ok", f"from the newest checkpoint: {found}")]
    return [
        CheckResult(
            name,
            "warning",
            "none configured or found in a run's checkpoints: token counts are approximate",
            "set [inbox] tokenizer to your model's folder (with tokenizer.json), or pass "
            "--tokenizer to tunewatch validate",
        )
    ]
