"""The daemon never loads torch or transformers: comparisons run in a child process."""

from __future__ import annotations

import subprocess
import sys

# Modules that run only in a child process (`python -m tunewatch.plugins.compare.child`): they
# import torch by design. Every other module is imported, so one that imported them at module
# level would bring torch in and fail this test.
CHILD_ONLY = (
    "tunewatch.plugins.compare.engine",
    "tunewatch.plugins.report.chart",
    "tunewatch.plugins.demo.tiny_run",
    "tunewatch.plugins.demo.train",
)

PROBE = """
import importlib, pkgutil, sys
import tunewatch.daemon, tunewatch.plugins
CHILD_ONLY = sys.argv[1:]
for package in (tunewatch.daemon, tunewatch.plugins):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.endswith("__main__") or info.name in CHILD_ONLY:
            continue
        importlib.import_module(info.name)
from tunewatch.daemon.plugin import discover_plugins
assert all(p.cls is not None for p in discover_plugins()), discover_plugins()
ml = {"torch", "transformers", "tokenizers", "safetensors", "matplotlib"}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ml)
print(",".join(heavy))
"""


def test_importing_every_daemon_and_plugin_module_loads_no_ml_framework() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *CHILD_ONLY],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.strip() == ""


LOADED_BY_THE_DAEMON = """
import sys
from tunewatch.daemon.plugin import discover_plugins
import tunewatch.daemon.service
assert all(p.cls is not None for p in discover_plugins())
lazy = ("numpy", "matplotlib", "torch", "google_crc32c", "prometheus_client")
print(",".join(sorted(m for m in lazy if m in sys.modules)))
"""


def test_the_plugins_the_daemon_starts_load_no_numpy_until_they_need_it() -> None:
    # numpy costs 11 MB of resident memory: the comparison's statistics and the validator use
    # it in their own processes, the daemon itself must stay under 80 MB. The TensorBoard
    # reader's CRC32C library and prometheus_client load only when an event file is found or
    # the exporter is switched on.
    proc = subprocess.run(
        [sys.executable, "-c", LOADED_BY_THE_DAEMON],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert proc.stdout.strip() == ""
