"""A model that predicts its own parameter: the smallest model whose tasks are exact quadratics.

With targets ``c_i`` (every example of task ``i``), the mean squared error of :class:`Point` is
``L_i(theta) = ||theta - c_i||^2 / d``: a quadratic with its optimum at ``c_i``. Reptile's update and its
sign (Nichol et al. 2018, §4; the book's erratum 1) can be seen and tested on it exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Point(nn.Module):
    """``forward(x) = theta`` for every example of ``x``: ``(shots, ...) -> (shots, d)``.

    ``theta`` is an int ``d`` (start at zero) or a tensor of shape ``(d,)`` (start there; copied).
    """

    def __init__(self, theta: int | Tensor) -> None:
        super().__init__()
        if isinstance(theta, Tensor):
            if theta.dim() != 1:
                raise ValueError(f"theta must be an int d or a tensor of shape (d,), got shape {tuple(theta.shape)}")
            start = theta.detach().clone()
        elif isinstance(theta, int) and not isinstance(theta, bool) and theta >= 1:
            start = torch.zeros(theta)
        else:
            raise ValueError(f"theta must be a positive int d or a tensor of shape (d,), got {theta!r}")
        self.theta = nn.Parameter(start)

    def forward(self, x: Tensor) -> Tensor:
        return self.theta.expand(x.shape[0], -1)  # (shots, d)


__all__ = ["Point"]
