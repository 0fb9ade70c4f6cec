"""Moving a failing file aside without ever overwriting or deleting anything."""

from __future__ import annotations

import os
from pathlib import Path


def move_aside(path: Path, folder: Path) -> Path:
    """Move `path` into `folder`; a name already taken there gets a `-1`, `-2`... suffix.

    os.link fails if the destination exists, so no file is ever overwritten, even by a race.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = path.stem, path.suffix
    for n in range(10_000):
        target = folder / (path.name if n == 0 else f"{stem}-{n}{suffix}")
        try:
            os.link(path, target)
        except FileExistsError:
            continue
        os.unlink(path)
        return target
    raise FileExistsError(f"no free name for {path.name} in {folder}")
