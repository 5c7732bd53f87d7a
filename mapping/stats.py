"""Summary statistics for evaluation over many held-out tasks."""
from __future__ import annotations

import math

from torch import Tensor


def mean_ci95(values: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Mean and half-width of the normal 95% confidence interval, ``1.96 * std / sqrt(n)``, along ``dim``."""
    if values.shape[dim] < 2:
        raise ValueError(f"values needs at least 2 entries along dim {dim} for a confidence interval, "
                         f"got shape {tuple(values.shape)}")
    values = values.double()
    n = values.shape[dim]
    return values.mean(dim), 1.96 * values.std(dim, unbiased=True) / math.sqrt(n)


__all__ = ["mean_ci95"]
