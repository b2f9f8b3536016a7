"""Timing helpers for the ``ropekit bench`` targets (these import torch)."""

from __future__ import annotations

import datetime
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def configure_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when the user gave one."""
    if threads is not None:
        torch.set_num_threads(threads)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(
    fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int, min_sample_seconds: float = 0.0
) -> list[float]:
    """Call ``fn`` warmup times untimed, then time ``repeats`` samples; return each sample's seconds per call.

    A sample is one call, or, when one call takes less than ``min_sample_seconds``, enough
    back-to-back calls to last about that long, divided by their count. Each sample is
    bracketed by device synchronisation, so asynchronous GPU work is counted in full, and
    batching short calls keeps the cost of synchronising out of their time.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)

    calls = 1
    if min_sample_seconds > 0:
        start = time.perf_counter()
        fn()
        synchronize(device)
        single = max(time.perf_counter() - start, 1e-9)
        calls = max(1, min(10_000, math.ceil(min_sample_seconds / single)))

    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        seconds.append((time.perf_counter() - start) / calls)
    return seconds


def median_ms(seconds: Sequence[float]) -> float:
    return statistics.median(seconds) * 1e3


def read_transparent_hugepage_mode() -> str | None:
    """Return Linux's transparent huge page mode (always, madvise or never), or None where it cannot be read."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    # The file lists every mode and brackets the active one: "always [madvise] never".
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def describe_machine(device: torch.device) -> dict[str, Any]:
    """Return the facts a reader needs to interpret a timing: date, versions, device and threads."""
    facts: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "command": " ".join(sys.argv),
        # Whether torch's CPU allocator requests 2 MiB pages (THP_MEM_ALLOC_ENABLE=1), and Linux's
        # huge page mode. Large new CPU tensors cost far more to fault in with 4 KiB pages.
        "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE"),
        "transparent_hugepage": read_transparent_hugepage_mode(),
    }
    if device.type == "cuda":
        facts["device_name"] = torch.cuda.get_device_name(device)
    return facts
