"""Gradient aggregators: one update direction from the T task gradients (the rows of the Jacobian J, (T, P)).

Every method here returns a linear combination ``d = w^T J = sum_i w_i g_i`` whose weights ``w`` depend only on the
inner products ``g_i . g_j``, i.e. on the Gramian ``G = J J^T`` (T, T) (Quinton & Rey 2024, §6): an aggregator is a
map ``weights(G) -> w`` and ``aggregator(J) = weights(J J^T) @ J``. The weights are computed in float64 from the
(T, T) Gramian, whatever P is; :func:`~mapping.multitask.backward.mtl_backward` uses the same weights to combine the
task gradients into each shared parameter's ``.grad``.

* :class:`Mean`: ``w_i = 1/T`` (the gradient of the mean loss; the baseline).
* :class:`PCGrad`: project each g_i on the normal plane of every conflicting g_j, in random order; sum
  (Yu et al. 2020, Algorithm 1).
* :class:`MGDA`: the min-norm point of the convex hull of the g_i (Désidéri 2012; Sener & Koltun 2018,
  Algorithms 1 and 2).
* :class:`CAGrad`: the average gradient moved, within a ball of radius ``c ||g_0||``, towards the worst task
  (Liu et al. 2021, Algorithm 1).
* :class:`UPGrad`: the mean of the projections of the g_i onto the dual cone of all of them (Quinton & Rey 2024,
  the projection of their eq. (3), computed by their Proposition 1).
* :class:`IMTLG`: the combination with equal projections on every unit task gradient (Liu et al. 2021b, IMTL-G).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks import check_int, check_number
from .aggregator_base import Aggregator, check_gramian, check_jacobian
from .qp_aggregators import CAGrad, IMTLG, UPGrad, nonneg_qp, project_simplex  # noqa: F401  (re-exported)

__all__ = ["Aggregator", "CAGrad", "IMTLG", "MGDA", "Mean", "PCGrad", "UPGrad", "check_gramian", "check_jacobian",
           "nonneg_qp"]  # Aggregator and the checks live in .aggregator_base; CAGrad, UPGrad, IMTLG and nonneg_qp
# in .qp_aggregators; all are re-exported here, the one place the book imports aggregators from


class Mean(Aggregator):
    """``d = (1/T) sum_i g_i``: the gradient of the mean loss."""

    def _weights(self, G: Tensor) -> Tensor:
        return G.new_full((G.shape[0],), 1.0 / G.shape[0])  # (T,)


class PCGrad(Aggregator):
    """Projecting Conflicting Gradients (Yu et al. 2020, Algorithm 1).

    For each task i: ``g_i^PC = g_i``; for each j != i in a random order, if ``g_i^PC . g_j < 0``,
    ``g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 g_j`` (the already projected g_i^PC is projected again). The update is
    ``sum_i g_i^PC`` (a sum, so T times the mean when no gradients conflict). Each ``g_i^PC = C[i] @ J`` is tracked
    by its coefficients C (T, T), so only the Gramian is needed. The orders come from a ``torch.Generator`` seeded by
    ``seed`` (a fresh permutation per task and per call; ``last_order[i]`` lists the j of the last call).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._generator = torch.Generator()
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        self.last_order: list[list[int]] = []

    def _weights(self, G: Tensor) -> Tensor:
        T, Gl = G.shape[0], G.tolist()  # small (T, T) problem: plain Python floats
        weights = [0.0] * T
        self.last_order = []
        for i in range(T):
            order = [j for j in torch.randperm(T, generator=self._generator).tolist() if j != i]
            self.last_order.append(order)
            coef, dots = [float(k == i) for k in range(T)], list(Gl[i])  # C[i]; dots[k] = g_i^PC . g_k
            for j in order:
                if dots[j] < 0:  # conflict: g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 g_j
                    step = dots[j] / Gl[j][j]
                    coef[j] -= step
                    dots = [d - step * gjk for d, gjk in zip(dots, Gl[j])]
            weights = [w + c for w, c in zip(weights, coef)]
        return torch.tensor(weights, dtype=G.dtype)  # (T,): sum_i C[i]


def min_norm_2(aa: Tensor, ab: Tensor, bb: Tensor, tie: float = 0.5) -> Tensor:
    """``argmin_{gamma in [0, 1]} ||gamma a + (1 - gamma) b||^2`` from a.a, a.b, b.b (Sener & Koltun 2018, Alg. 1).

    ``gamma = clip(((b - a) . b) / ||a - b||^2, 0, 1)``; ``tie`` when a = b.
    """
    den = aa + bb - 2 * ab
    if den <= 0:
        return torch.as_tensor(tie, dtype=aa.dtype)
    return ((bb - ab) / den).clamp(0, 1)


def best_pair(G: Tensor) -> Tensor:
    """The min-norm point over the T(T-1)/2 edges of the simplex (T,), each in closed form (Algorithm 1)."""
    T = G.shape[0]
    d = G.diagonal()  # (T,)
    den = d[:, None] + d[None, :] - 2 * G  # (T, T): ||g_i - g_j||^2
    gamma = torch.where(den > 0, (d[None, :] - G) / den.clamp_min(1e-300), 0.5).clamp(0, 1)  # (T, T): weight on i
    sq = gamma ** 2 * d[:, None] + (1 - gamma) ** 2 * d[None, :] + 2 * gamma * (1 - gamma) * G  # (T, T)
    sq = sq + torch.diag(G.new_full((T,), math.inf))  # (T, T): no pair (i, i)
    i, j = divmod(int(sq.argmin()), T)
    w = G.new_zeros(T)  # (T,)
    w[i], w[j] = gamma[i, j], 1 - gamma[i, j]
    return w


class MGDA(Aggregator):
    """The min-norm element of the convex hull: ``w = argmin_{w in simplex} ||w^T J||^2`` (Désidéri 2012).

    T = 2: the closed form of Sener & Koltun 2018, Algorithm 1. T > 2: their Frank-Wolfe solver (Algorithm 2)
    with the exact line search of Algorithm 1, started, as in the authors' code, from the best of the T(T-1)/2
    two-task solutions (exact when the optimum lies on an edge of the simplex) rather than from uniform weights, and
    stopped when the weights move by less than ``tol`` (L1) or after ``max_iter`` steps (their code's defaults).
    Frank-Wolfe converges slowly, O(1/k), when the optimum lies on a face of the simplex. MGDA-UB (§3.3) is MGDA on
    the Jacobian w.r.t. the shared representation: ``mtl_backward(..., features=z)``.
    """

    def __init__(self, max_iter: int = 250, tol: float = 1e-5) -> None:
        check_int("max_iter", max_iter, 1)
        check_number("tol", tol)
        self.max_iter, self.tol = max_iter, tol

    def _weights(self, G: Tensor) -> Tensor:
        T = G.shape[0]
        if T == 1:
            return G.new_ones(1)  # (1,)
        if T == 2:
            gamma = min_norm_2(G[0, 0], G[0, 1], G[1, 1])
            return torch.stack([gamma, 1 - gamma])  # (2,)
        w = best_pair(G)  # (T,)
        for _ in range(self.max_iter):
            Gw = G @ w  # (T,): g_w . g_t
            t = int(Gw.argmin())  # the vertex that most decreases the norm
            gamma = min_norm_2(w @ Gw, Gw[t], G[t, t], tie=1.0)  # weight kept on the current point
            new = gamma * w  # (T,)
            new[t] += 1 - gamma
            done = (new - w).abs().sum().item() < self.tol
            w = new
            if done:
                break
        return w

