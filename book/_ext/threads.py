"""Sphinx extension: the notebooks' kernels run torch's CPU threads with ``OMP_WAIT_POLICY=PASSIVE``.

OpenMP's worker threads spin while they wait for work; when another program holds a core (a reader's laptop,
a second build, a test run), the spinning threads steal it from the one doing the work, and a page that runs in
a minute on a quiet machine takes a quarter of an hour. Passive waiting puts them to sleep instead.
``benchmarks/threads_under_load.py`` measures both policies quiet and loaded (``results/benchmark_threads_load.json``,
shown in chapter 7). Kernels inherit the build's environment, and OpenMP reads it when torch loads, so this is set
before any notebook runs; a value the reader set is kept. ``benchmarks/book_build.py`` runs its pages with
:data:`ENV` too.
"""
from __future__ import annotations

import os

ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def setup(app):
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
