"""Several training runs at once, each in a worker process with its own torch threads."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def _worker(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def map_runs(run: Callable[..., Any], configs: Sequence[Any], jobs: int = 1, threads: int | None = None,
             **kwargs: Any) -> list[Any]:
    """``[run(config, **kwargs) for config in configs]``; with ``jobs > 1`` in that many spawned worker processes
    of ``threads`` torch threads each, taking the configs in order as workers free up (put the longest first).
    ``run`` must be importable (a module-level function) and seed each run from its config alone, so that the
    results do not depend on ``jobs``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    if jobs == 1:
        return [run(config, **kwargs) for config in configs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(run, config, **kwargs) for config in configs]
        return [future.result() for future in futures]


__all__ = ["map_runs"]
