"""Sinusoid regression tasks (Finn, Abbeel & Levine 2017, MAML §5.1; Nichol et al. 2018, Reptile).

Each task is ``y = A sin(x + phi)``. MAML draws ``A ~ U[0.1, 5.0]``, ``phi ~ U[0, pi]``,
``x ~ U[-5, 5]``; Reptile's variant draws ``phi ~ U[0, 2 pi]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .tasks import TaskBatch


@dataclass(frozen=True)
class Sinusoid:
    """A distribution over sinusoid tasks. ``Sinusoid.reptile()`` gives Reptile's phase range."""

    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self) -> None:
        for name in ("amplitude", "phase", "x_range"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"{name} must be a finite (low, high) pair with low < high, got {(lo, hi)}")

    @classmethod
    def maml(cls) -> "Sinusoid":
        return cls()

    @classmethod
    def reptile(cls) -> "Sinusoid":
        return cls(phase=(0.0, 2 * math.pi))

    def sample(self, tasks: int, k_shot: int, q_query: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> TaskBatch:
        """Sample ``tasks`` tasks with ``k_shot`` support and ``q_query`` query points each.

        Returns a :class:`TaskBatch` with x, y of shape ``(tasks, shots, 1)`` and ``info`` holding the
        task parameters ``amplitude`` and ``phase`` of shape ``(tasks,)``.
        """
        for name, value, low in (("tasks", tasks, 1), ("k_shot", k_shot, 1), ("q_query", q_query, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        g = generator
        amplitude = _uniform((tasks,), self.amplitude, g, dtype)  # (tasks,)
        phase = _uniform((tasks,), self.phase, g, dtype)  # (tasks,)
        x = _uniform((tasks, k_shot + q_query, 1), self.x_range, g, dtype)  # (tasks, shots, 1)
        y = self.function(x, amplitude, phase)  # (tasks, shots, 1)
        return TaskBatch(x[:, :k_shot], y[:, :k_shot], x[:, k_shot:], y[:, k_shot:],
                         info={"amplitude": amplitude, "phase": phase})

    @staticmethod
    def function(x: Tensor, amplitude: Tensor, phase: Tensor) -> Tensor:
        """``A sin(x + phi)`` for x of shape ``(tasks, points, 1)`` and A, phi of shape ``(tasks,)``."""
        return amplitude[:, None, None] * torch.sin(x + phase[:, None, None])  # (tasks, points, 1)


def _uniform(shape: tuple[int, ...], bounds: tuple[float, float], g: torch.Generator | None,
             dtype: torch.dtype) -> Tensor:
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=dtype)


__all__ = ["Sinusoid"]
