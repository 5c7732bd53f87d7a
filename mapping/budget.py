"""Run budgets: ``MAPPING_MODE`` = ``smoke`` | ``quick`` | ``full``.

* ``smoke``: CI's notebook runs (each notebook under a minute on 2 CPU cores), tiny but real.
* ``quick``: what the rendered book shows (the default when the variable is unset).
* ``full``: the papers' scale, run by ``python -m mapping.reproduce`` and stored under ``results/``.

Every experiment states its three sizes in one call, so the numbers sit next to the code::

    iterations = pick(smoke=200, quick=4000, full=70_000)
"""
from __future__ import annotations

import os
from typing import TypeVar

MODES = ("smoke", "quick", "full")
DEFAULT_MODE = "quick"
T = TypeVar("T")


def mode(override: str | None = None) -> str:
    """The active mode: ``override`` if given, else ``$MAPPING_MODE``, else ``"quick"``."""
    value = override if override is not None else os.environ.get("MAPPING_MODE", DEFAULT_MODE)
    value = value.strip().lower()
    if value not in MODES:
        raise ValueError(f"MAPPING_MODE must be one of {', '.join(MODES)}; got {value!r}")
    return value


def pick(*, smoke: T, quick: T, full: T, mode_: str | None = None) -> T:
    """Return the value for the active mode (see :func:`mode`)."""
    return {"smoke": smoke, "quick": quick, "full": full}[mode(mode_)]
