"""What `tunewatch doctor` checks for comparisons: torch and transformers load, and whether a
GPU with free memory is there (else comparisons run on the CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tunewatch.daemon.doctor import CheckResult

# torch is imported in a child: a broken CUDA install can hang or crash the importer.
PROBE = """
import json, torch, transformers
info = {"torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available()}
if info["cuda"]:
    free, total = torch.cuda.mem_get_info()
    info.update(gpu=torch.cuda.get_device_name(0), free=free, total=total)
print(json.dumps(info))
"""
PROBE_TIMEOUT_S = 60.0


def checks(config: Any) -> list[CheckResult]:
    name = "comparisons (torch, GPU)"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return [CheckResult(name, "error", f"importing torch took over {PROBE_TIMEOUT_S:g} s")]
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        return [
            CheckResult(
                name,
                "error",
                f"torch/transformers do not load: {last}",
                "reinstall torch for your platform (https://pytorch.org/get-started/locally/)",
            )
        ]
    info = json.loads(proc.stdout)
    versions = f"torch {info['torch']}, transformers {info['transformers']}"
    if not info["cuda"]:
        cpu = "no CUDA GPU: comparisons run on the CPU (slower, never in training's way)"
        if config.device == "cuda":
            return [CheckResult(name, "error", f"{versions}; {cpu}", '[compare] device = "auto"')]
        return [CheckResult(name, "ok", f"{versions}; {cpu}")]
    free_gib, total_gib = info["free"] / 2**30, info["total"] / 2**30
    detail = f"{versions}; {info['gpu']}: {free_gib:.1f} of {total_gib:.1f} GiB free"
    if free_gib < config.gpu_margin_gb:
        advice = (
            "comparisons go to the CPU while training holds the GPU"
            if config.when_gpu_short == "cpu"
            else "comparisons wait for the GPU to free up (when_gpu_short = defer)"
        )
        return [
            CheckResult(
                name, "ok", f"{detail}; below the {config.gpu_margin_gb:g} GiB margin: {advice}"
            )
        ]
    return [CheckResult(name, "ok", detail)]
