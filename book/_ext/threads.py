"""Sphinx extension: the notebooks' kernels run torch's CPU threads with a bounded spin, ``GOMP_SPINCOUNT=3000``.

OpenMP's worker threads spin while they wait for work (GNU OpenMP, which torch's Linux wheels ship, spins 300,000
times by default); when another program holds a core (a reader's laptop, a second build, a test run), the
spinning threads steal it from the one doing the work. ``benchmarks/threads_under_load.py`` times a Conv-4 step
and a MAML step quiet and with one core busy (``results/benchmark_threads_load.json``; chapter 7 shows it and
checks these statements on it). With a spin of 3,000 the quiet steps stay within a fifth of the default's while
the loaded ones take a third to a half less time; sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) protects the
loaded MAML step more but doubled the quiet time of small-tensor steps (MAML's; 2.2's moons took 12.1 s against
5.1 s), and one thread costs the convolutional pages their second core. Kernels inherit the build's
environment, and OpenMP reads it when torch loads, so this is set before any notebook runs; a value the reader
set is kept. ``benchmarks/book_build.py`` runs its pages with :data:`ENV` too.
"""
from __future__ import annotations

import os

ENV = {"GOMP_SPINCOUNT": "3000"}


def setup(app):
    for key, value in ENV.items():
        os.environ.setdefault(key, value)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
