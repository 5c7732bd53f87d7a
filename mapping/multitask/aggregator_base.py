"""The base class of the gradient aggregators and their input checks (:mod:`mapping.multitask.aggregators`).

An aggregator maps the Gramian ``G = J J^T`` (T, T) of the task gradients to the weights ``w`` (T,) of their
combination ``d = w^T J`` (Quinton & Rey 2024, §6); :class:`Aggregator` checks the Gramian, computes in float64
and applies the weights. :mod:`.aggregators` and :mod:`.qp_aggregators` both build on this module.
"""
from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["Aggregator", "check_gramian", "check_jacobian"]


def _check_matrix(name: str, value: object, square: bool, form: str) -> None:
    """``value``: a 2-D floating tensor with at least one row (and square when ``square``), else ``ValueError``."""
    if not isinstance(value, Tensor) or value.dim() != 2 or value.shape[0] == 0 \
            or (square and value.shape[0] != value.shape[1]):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name} must be {form}, got {shape}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must hold floating-point values, got {value.dtype}")


def check_jacobian(jacobian: object) -> Tensor:
    """``jacobian``: a finite 2-D floating tensor (tasks, parameters) with at least one task."""
    _check_matrix("jacobian", jacobian, False, "a 2-D tensor (tasks, parameters) with at least one task (one row "
                  "per task gradient, e.g. from task_jacobian)")
    if not torch.isfinite(jacobian).all():
        task = int((~torch.isfinite(jacobian)).any(1).nonzero()[0])
        raise FloatingPointError(f"jacobian holds a non-finite value in row {task} (task {task}'s gradient)")
    return jacobian


def check_gramian(gramian: object) -> Tensor:
    """``gramian``: a finite, square, symmetric (to rounding) floating tensor; returned symmetrised, float64, on CPU."""
    _check_matrix("gramian", gramian, True, "a square (T, T) tensor G = J J^T of the task gradients' inner products")
    if not torch.isfinite(gramian).all():
        raise FloatingPointError("gramian holds a non-finite value (nan or inf): some task gradient is not finite")
    G = gramian.detach().to("cpu", torch.float64)  # (T, T): the small problems run on the CPU
    scale = max(G.abs().max().item(), torch.finfo(torch.float64).tiny)
    tol = math.sqrt(torch.finfo(gramian.dtype).eps) * scale
    if (G - G.T).abs().max().item() > tol:
        raise ValueError(f"gramian must be symmetric (G = J J^T), but max |G - G^T| = "
                         f"{(G - G.T).abs().max().item():.3g} exceeds {tol:.3g}")
    if G.diagonal().min().item() < -tol:
        raise ValueError("gramian has a negative diagonal entry, but G[i, i] = ||g_i||^2 >= 0")
    return (G + G.T) / 2  # (T, T)


class Aggregator(ABC):
    """``weights(G) -> (T,)`` from the Gramian; ``aggregator(J) = weights(J J^T) @ J`` (P,)."""

    def weights(self, gramian: Tensor) -> Tensor:
        """The (T,) weights of the task gradients, in ``gramian``'s dtype and device (computed in float64)."""
        return self._weights(check_gramian(gramian)).to(gramian.device, gramian.dtype)  # (T,)

    def __call__(self, jacobian: Tensor) -> Tensor:
        J = check_jacobian(jacobian)  # (T, P)
        return self.weights(J @ J.T) @ J  # (P,)

    @abstractmethod
    def _weights(self, G: Tensor) -> Tensor:  # G: float64 (T, T), symmetric
        """Each aggregator's rule: the (T,) weights from a checked float64 Gramian."""

    def __repr__(self) -> str:
        names = [n for n, p in inspect.signature(type(self).__init__).parameters.items()
                 if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"
