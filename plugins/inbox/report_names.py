"""Names of validation reports: readable, one per validation, never a report already there."""

from __future__ import annotations

import os
from pathlib import Path

from tunewatch.daemon.text import readable_file_name

# A file name may have 255 bytes; leave room for the stamp, a suffix and write_atomic's temp name.
_MAX_DATA_NAME_BYTES = 160


def report_base(data_name: str, stamp: str) -> str:
    """`dup.jsonl` at `stamp` -> `dup.jsonl-<stamp>`: the extension keeps `dup.json` apart."""
    name = readable_file_name(data_name).encode()[:_MAX_DATA_NAME_BYTES].decode(errors="ignore")
    return f"{name}-{stamp}"


def claim_report_paths(folder: Path, base: str) -> tuple[Path, Path]:
    """Create `base.md` and `base.json` empty, or `base-2.*`, `base-3.*`...: the first free pair.

    Creating them with O_EXCL makes the names ours even against a second daemon: the reports
    written there afterwards never replace someone else's.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        stem = base if n == 1 else f"{base}-{n}"
        markdown, json_path = folder / f"{stem}.md", folder / f"{stem}.json"
        if not _create_new(markdown):
            continue
        if _create_new(json_path):
            return markdown, json_path
        markdown.unlink()
    raise FileExistsError(f"no free report name for {base} in {folder}")


def _create_new(path: Path) -> bool:
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        return False
    return True
