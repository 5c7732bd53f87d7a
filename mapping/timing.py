"""Side-by-side timing for ``benchmarks/``: ratios measured in one process, blocks interleaved round-robin."""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, block_s: float) -> dict[str, float]:
    """Median ms per call of each function. Each is calibrated on one (already warm) call to run in blocks of
    about ``block_s`` seconds; the blocks of all functions alternate, the first rotating every repeat, so that a
    machine's changing load falls on every function alike."""
    calls = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        calls[name] = max(1, math.ceil(block_s / (time.perf_counter() - start)))
    names, times = list(fns), {name: [] for name in fns}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            for _ in range(calls[name]):
                fns[name]()
            times[name].append(1000 * (time.perf_counter() - start) / calls[name])
    return {name: statistics.median(t) for name, t in times.items()}


__all__ = ["time_interleaved"]
