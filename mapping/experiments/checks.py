"""Checks of experiment configs, so that a bad field fails at once with its name, not deep inside a run.

Built on :mod:`mapping.checks`, the package's argument checks: a config field is checked as an argument named
after the field.
"""
from __future__ import annotations

from ..checks import check_int


def check_ints(config: object, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` naming the first field of ``config`` that is not an int >= 1 (``positive``) or >= 0
    (``non_negative``)."""
    for names, low in ((positive, 1), (non_negative, 0)):
        for name in names:
            check_int(name, getattr(config, name), low)


__all__ = ["check_ints"]
