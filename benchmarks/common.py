"""Shared helpers for the benchmark scripts: timing, peak memory, JSON output."""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
MNIST_8K = REPO.parent / "shared" / "data" / "mnist-8k"


def peak_memory_mb(device: torch.device | None = None) -> float:
    """Peak resident memory of this process (CPU), or peak allocated CUDA memory, in MiB."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args, repeat: int = 1, **kwargs) -> tuple[Any, float]:
    """(result of the last call, best wall-clock seconds over `repeat` calls)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    return out, best


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2))
    sys.stdout.flush()


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    import os
    import platform

    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}
