"""Aggregators that solve a small problem on the Gramian ``G = J J^T``: CAGrad (a convex problem on the simplex),
UPGrad (non-negative quadratic programmes, Quinton & Rey 2024, Proposition 1) and IMTL-G (a linear system).

The base class and the input checks are in :mod:`mapping.multitask.aggregator_base`;
:class:`~mapping.multitask.aggregators.Mean`, ``PCGrad`` and ``MGDA`` in :mod:`mapping.multitask.aggregators`, which
re-exports everything here.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..checks import check_int, check_number
from .aggregator_base import Aggregator, check_gramian

__all__ = ["CAGrad", "IMTLG", "UPGrad", "nonneg_qp", "project_simplex"]


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of ``v`` (T,) onto the probability simplex (Duchi et al. 2008, Fig. 1)."""
    u = v.sort(descending=True).values  # (T,)
    css = u.cumsum(0) - 1  # (T,)
    k = torch.arange(1, v.numel() + 1, dtype=v.dtype)  # (T,)
    rho = int((u - css / k > 0).nonzero()[-1])
    return (v - css[rho] / (rho + 1)).clamp_min(0)  # (T,)


def _cagrad_objective(w: Tensor, G: Tensor, a: Tensor, r: float) -> tuple[Tensor, Tensor]:
    """``F(w) = w . a + r ||g_w||`` (a = G w0) and its gradient ``a + r G w / ||g_w||``."""
    Gw = G @ w  # (T,)
    norm = (w @ Gw).clamp_min(0).sqrt()
    grad = a + r * Gw / norm if norm > 0 else a  # (T,)
    return w @ a + r * norm, grad


class CAGrad(Aggregator):
    """Conflict-Averse Gradient descent (Liu et al. 2021, Algorithm 1).

    With ``g_0`` the mean gradient: ``d = g_0 + (c ||g_0|| / ||g_w||) g_w``, ``g_w = sum_i w_i g_i``, where
    ``w = argmin_{w in simplex} F(w) = g_w . g_0 + c ||g_0|| ||g_w||`` (the dual of ``max_d min_i g_i . d`` over
    ``||d - g_0|| <= c ||g_0||``). F is convex; it is minimised here by accelerated projected gradient descent on the
    simplex with backtracking (float64, at most ``max_iter`` steps, until the weights move by less than ``tol``).
    ``c = 0`` is :class:`Mean` exactly. ``rescale`` as in the official code: 0 returns d, 1 (its default) returns
    ``d / (1 + c^2)``, 2 returns ``d / (1 + c)``.
    """

    def __init__(self, c: float = 0.5, rescale: int = 1, max_iter: int = 500, tol: float = 1e-12) -> None:
        check_number("c", c)
        check_int("max_iter", max_iter, 1)
        check_number("tol", tol)
        if rescale not in (0, 1, 2):
            raise ValueError(f"rescale must be 0 (none), 1 (divide by 1 + c^2) or 2 (divide by 1 + c), got {rescale!r}")
        self.c, self.rescale, self.max_iter, self.tol = float(c), rescale, max_iter, tol

    def inner_weights(self, G: Tensor) -> Tensor:
        """``argmin_{w in simplex} F(w)`` (T,) for a float64 Gramian G: FISTA with backtracking and restarts."""
        T = G.shape[0]
        w0 = G.new_full((T,), 1.0 / T)  # (T,)
        a = G @ w0  # (T,): g_i . g_0
        r = self.c * (w0 @ a).clamp_min(0).sqrt().item()  # c ||g_0||
        step_max = 1e6 / max(G.diagonal().max().item(), 1e-300)
        w, y, step, momentum = w0, w0, step_max, 1.0
        f_w = _cagrad_objective(w, G, a, r)[0]
        for _ in range(self.max_iter):
            f_y, grad = _cagrad_objective(y, G, a, r)
            while True:  # backtracking: accept the step once the quadratic upper bound holds at the new point
                new = project_simplex(y - step * grad)  # (T,)
                f_new = _cagrad_objective(new, G, a, r)[0]
                if f_new <= f_y + grad @ (new - y) + (new - y).pow(2).sum() / (2 * step) + 1e-15 * f_y.abs():
                    break
                step /= 2
            if f_new > f_w:  # the momentum overshot: restart from w (O'Donoghue & Candes 2015), or stop
                if y is w:
                    break
                y, momentum = w, 1.0
                continue
            moved = (new - w).abs().sum().item()
            next_momentum = (1 + math.sqrt(1 + 4 * momentum ** 2)) / 2
            y = new + (momentum - 1) / next_momentum * (new - w)  # (T,)
            w, f_w, momentum, step = new, f_new, next_momentum, min(2 * step, step_max)
            if moved < self.tol:
                break
        return w

    def _weights(self, G: Tensor) -> Tensor:
        T = G.shape[0]
        w0 = G.new_full((T,), 1.0 / T)  # (T,)
        if self.c == 0:
            return w0
        r = self.c * (w0 @ G @ w0).clamp_min(0).sqrt()  # c ||g_0||
        w = self.inner_weights(G)  # (T,)
        norm = (w @ G @ w).clamp_min(0).sqrt()  # ||g_w||
        d = w0 + r / norm * w if norm > 0 else w0  # (T,)
        return d / (1.0, 1 + self.c ** 2, 1 + self.c)[self.rescale]


def _solve_free(G: Tensor, Q: Tensor, free: Tensor) -> Tensor:
    """``S[b]`` (B, T): ``G_FF s_F = -q_F`` on each problem's free set F = ``free[b]``, 0 elsewhere."""
    M = torch.where(free[:, :, None] & free[:, None, :], G, 0.0) + torch.diag_embed((~free).to(G.dtype))  # (B, T, T)
    rhs = -(Q * free)[..., None]  # (B, T, 1)
    try:
        S = torch.linalg.solve(M, rhs)  # (B, T, 1)
    except torch.linalg.LinAlgError:  # numerically singular: minimum-norm least-squares solutions
        S = torch.linalg.pinv(M, hermitian=True) @ rhs  # (B, T, 1)
    return S[..., 0] * free  # (B, T)


def nonneg_qp(G: Tensor, Q: Tensor, *, tol: float = 1e-12, max_iter: int | None = None) -> Tensor:
    """``X[b] = argmin_{x >= 0} x^T G x / 2 + Q[b] . x`` for each row of Q (B, T); G (T, T) positive semi-definite.

    Lawson & Hanson's active-set method for non-negative least squares (1974, ch. 23, Algorithm NNLS), in the form
    that needs only ``G = A^T A`` and ``A^T b = -q`` (Bro & De Jong 1997), run on the B problems in lockstep: a
    variable leaves its bound when its negative gradient exceeds ``tol`` (relative to max |G| and the largest |x|);
    the system on the free variables is solved exactly, and the iterate steps back to the boundary when a free
    variable would turn negative. The free columns stay linearly independent, so a singular G (more tasks than
    gradient directions) is fine, and the iterates stay feasible. At most ``max_iter`` (default 3 T) variables are
    freed per problem.
    """
    B, T = Q.shape
    scale = max(G.abs().max().item(), 1e-300)
    G, Q = G / scale, Q / scale  # (T, T), (B, T): the same minimisers
    X, free = torch.zeros_like(Q), torch.zeros(B, T, dtype=torch.bool)  # (B, T), (B, T)
    rows = torch.arange(B)
    for _ in range(max_iter or 3 * T):
        W = torch.where(free, -math.inf, -(X @ G + Q))  # (B, T): minus the gradient, at the bound variables
        top, j = W.max(1)  # (B,), (B,)
        active = top > tol * X.abs().amax(1).clamp_min(1.0)  # (B,): problems not yet optimal
        if not active.any():
            break
        free[rows[active], j[active]] = True
        for _ in range(T + 1):  # each step back frees at least one variable of each problem it moves
            S = _solve_free(G, Q, free)  # (B, T)
            neg = free & (S <= 0) & active[:, None]  # (B, T)
            back = neg.any(1)  # (B,)
            if not back.any():
                break
            alpha = torch.where(neg, X / (X - S), math.inf).amin(1).clamp(max=1.0)  # (B,)
            X = torch.where(back[:, None], X + alpha[:, None] * (S - X), X)  # (B, T)
            free &= ~back[:, None] | (X > tol)
            X = X * free
        X = torch.where(active[:, None], S, X)  # (B, T)
    return X


class UPGrad(Aggregator):
    """Unconflicting Projection of Gradients (Quinton & Rey 2024, "Jacobian descent for multi-objective optimization").

    Each g_i is projected onto the dual cone ``{x : J x >= 0}`` of all the task gradients; the update is the mean
    of the projections, so that it conflicts with no task (``d . g_j >= 0`` for all j). By their Proposition 1 the
    projection of g_i is ``J^T v_i`` with ``v_i = argmin_{v >= e_i} v^T G v``: T small quadratic programs on the
    Gramian, solved exactly by :func:`nonneg_qp` (``v = e_i + x``, ``x >= 0``). When no two gradients conflict
    (G >= 0 entrywise) every ``v_i = e_i`` and UPGrad is :class:`Mean`. ``reg_eps`` adds ``reg_eps * trace(G) / T``
    to G's diagonal (TorchJD's regularisation; 0, the default, solves the problem as stated).
    """

    def __init__(self, reg_eps: float = 0.0) -> None:
        check_number("reg_eps", reg_eps)
        self.reg_eps = float(reg_eps)

    def projections(self, gramian: Tensor) -> Tensor:
        """``V`` (T, T): row i holds the weights ``v_i`` of the projection ``J^T v_i`` of g_i onto the dual cone.

        Computed in float64 on the CPU, on the nearest positive semi-definite matrix to G whose eigenvalues below
        ``100 eps`` (of ``gramian``'s dtype) times the largest are zero: a float32 Gramian of low rank comes back
        slightly indefinite (a few negative eigenvalues of 1e-8 relative size), and the QP would then be unbounded.
        """
        G = check_gramian(gramian)  # (T, T)
        T = G.shape[0]
        if self.reg_eps:
            G = G + self.reg_eps * G.trace() / T * torch.eye(T, dtype=G.dtype)  # (T, T)
        rtol = 100 * torch.finfo(gramian.dtype).eps
        lam, vecs = torch.linalg.eigh(G)  # (T,), (T, T)
        lam = torch.where(lam > rtol * lam[-1].clamp_min(1e-300), lam, 0.0)  # (T,)
        G = (vecs * lam) @ vecs.T  # (T, T)
        tol = max(1e-12, 10 * rtol)
        return torch.eye(T, dtype=G.dtype) + nonneg_qp(G, G, tol=tol)  # (T, T): v_i = e_i + x_i, q_i = G e_i

    def _weights(self, G: Tensor) -> Tensor:
        return self.projections(G).mean(0)  # (T,)


class IMTLG(Aggregator):
    """Impartial MTL, gradient part: IMTL-G (Liu et al. 2021b, "Towards impartial multi-task learning", ICLR).

    The weights ``a`` (summing to 1) make ``d = a^T J`` have the same projection on every unit gradient
    ``u_i = g_i / ||g_i||``: ``d . u_i = const``, i.e. ``G a = const * n`` with ``n_i = ||g_i||``, so
    ``a = G^+ n / 1^T G^+ n`` (the paper's closed form ``a_{2:T} = g_1 U^T (D U^T)^{-1}`` when G is invertible;
    the pseudo-inverse, with eigenvalues below ``rtol`` of the largest dropped, otherwise). Falls back to
    :class:`Mean` if ``1^T G^+ n`` vanishes (e.g. all gradients zero).
    """

    def __init__(self, rtol: float = 1e-12) -> None:
        check_number("rtol", rtol)
        self.rtol = rtol

    def _weights(self, G: Tensor) -> Tensor:
        n = G.diagonal().clamp_min(0).sqrt()  # (T,): ||g_i||
        v = torch.linalg.pinv(G, hermitian=True, rtol=self.rtol) @ n  # (T,)
        total = v.sum()
        if not total.abs() > 1e-12 * v.abs().sum():
            return G.new_full((G.shape[0],), 1.0 / G.shape[0])  # (T,)
        return v / total  # (T,)
