"""Checks of experiment configs, so that a bad field fails at once with its name, not deep inside a run."""
from __future__ import annotations


def check_ints(config: object, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` naming the first field of ``config`` that is not a positive (or non-negative) int."""
    for names, low, what in ((positive, 1, "a positive"), (non_negative, 0, "a non-negative")):
        for name in names:
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be {what} int, got {value!r}")


__all__ = ["check_ints"]
