"""The package's argument checks: a bad argument fails at the public call, with its name and the expected form.

Every message reads ``"<name> must be <expected form>, got <value>"``, e.g. ``"steps must be an int >= 1, got 0"``;
an optional ``why`` adds what the argument means, in brackets after the expected form.
"""
from __future__ import annotations

import math
from collections.abc import Collection

import torch
from torch import Tensor


def _why(why: str) -> str:
    return f" ({why})" if why else ""


def is_int(value: object) -> bool:
    """``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """``value`` is an ``int`` or ``float`` (not a ``bool``) and not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def check_int(name: str, value: object, low: int = 1, high: int | None = None, why: str = "") -> int:
    """``value``: an int in ``[low, high]`` (``high=None``: no upper bound); returns it, else ``ValueError``."""
    if not is_int(value) or value < low or (high is not None and value > high):
        expected = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
        raise ValueError(f"{name} must be {expected}{_why(why)}, got {value!r}")
    return value


def check_number(name: str, value: object, low: float = 0.0, strict: bool = False, why: str = "") -> float:
    """``value``: a finite real number ``>= low`` (``> low`` when ``strict``); returns it as a float."""
    if not is_real(value) or not math.isfinite(value) or not (value > low if strict else value >= low):
        raise ValueError(f"{name} must be a finite real number {'>' if strict else '>='} {low:g}{_why(why)}, "
                         f"got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: Collection, why: str = "") -> object:
    """``value``: one of ``choices``; returns it, else ``ValueError`` listing them."""
    if isinstance(value, (list, dict, set)) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}{_why(why)}, got {value!r}")
    return value


def check_finite(name: str, values: Tensor, hint: str = "") -> Tensor:
    """``values``: a tensor without NaN or inf; else ``FloatingPointError`` naming the first bad entry
    ``name[i]`` (``name[i, j]`` for more dimensions) and its value, then ``hint``. Returns ``values``."""
    bad = ~torch.isfinite(values.detach())
    if bad.any():
        index = tuple(int(i) for i in bad.nonzero()[0])
        where = ", ".join(map(str, index))
        raise FloatingPointError(f"{name}[{where}] is not finite ({values[index].item()}){hint}")
    return values


def check_tensor(name: str, value: object, dim: int, form: str) -> Tensor:
    """``value``: a non-empty tensor with ``dim`` dimensions, ``form`` naming them, e.g. ``"(N, d)"``."""
    if not isinstance(value, Tensor) or value.dim() != dim or value.numel() == 0:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be a non-empty tensor {form}, got {shape}")
    return value


__all__ = ["check_choice", "check_finite", "check_int", "check_number", "check_tensor", "is_int", "is_real"]
