"""The daemon never loads torch or transformers: comparisons run in a child process."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import importlib, pkgutil, sys
import tunewatch.daemon, tunewatch.plugins
for package in (tunewatch.daemon, tunewatch.plugins):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
from tunewatch.daemon.plugin import discover_plugins
assert all(p.cls is not None for p in discover_plugins()), discover_plugins()
ml = {"torch", "transformers", "tokenizers", "safetensors"}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ml)
print(",".join(heavy))
"""


def test_importing_every_daemon_and_plugin_module_loads_no_ml_framework() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == ""
