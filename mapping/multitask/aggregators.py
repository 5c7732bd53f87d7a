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

import inspect
import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["Aggregator", "CAGrad", "IMTLG", "MGDA", "Mean", "PCGrad", "UPGrad", "check_gramian", "check_jacobian",
           "nonneg_qp"]


def check_jacobian(jacobian: object) -> Tensor:
    """``jacobian``: a finite 2-D floating tensor (tasks, parameters) with at least one task."""
    if not isinstance(jacobian, Tensor) or jacobian.dim() != 2 or jacobian.shape[0] == 0:
        shape = tuple(jacobian.shape) if isinstance(jacobian, Tensor) else type(jacobian).__name__
        raise ValueError(f"jacobian must be a 2-D tensor (tasks, parameters) with at least one task (one row per "
                         f"task gradient, e.g. from task_jacobian), got {shape}")
    if not jacobian.is_floating_point():
        raise ValueError(f"jacobian must hold floating-point values, got {jacobian.dtype}")
    if not torch.isfinite(jacobian).all():
        task = int((~torch.isfinite(jacobian)).any(1).nonzero()[0])
        raise FloatingPointError(f"jacobian holds a non-finite value in row {task} (task {task}'s gradient)")
    return jacobian


def check_gramian(gramian: object) -> Tensor:
    """``gramian``: a finite, square, symmetric (to rounding) floating tensor; returned symmetrised, float64, on CPU."""
    if not isinstance(gramian, Tensor) or gramian.dim() != 2 or gramian.shape[0] != gramian.shape[1] \
            or gramian.shape[0] == 0:
        shape = tuple(gramian.shape) if isinstance(gramian, Tensor) else type(gramian).__name__
        raise ValueError(f"gramian must be a square (T, T) tensor G = J J^T of the task gradients' inner products, "
                         f"got {shape}")
    if not gramian.is_floating_point():
        raise ValueError(f"gramian must hold floating-point values, got {gramian.dtype}")
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


def _check_number(name: str, value: object, *, integer: bool = False, positive: bool = False) -> None:
    """``value`` is a finite non-negative (or ``positive``) float, or int with ``integer``; else ``ValueError``."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not 0 <= value < math.inf \
            or (positive and value == 0):
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} "
                         f"{'int' if integer else 'finite float'}, got {value!r}")


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
        _check_number("max_iter", max_iter, integer=True, positive=True)
        _check_number("tol", tol)
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
        _check_number("c", c)
        _check_number("max_iter", max_iter, integer=True, positive=True)
        _check_number("tol", tol)
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
        _check_number("reg_eps", reg_eps)
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
        _check_number("rtol", rtol)
        self.rtol = rtol

    def _weights(self, G: Tensor) -> Tensor:
        n = G.diagonal().clamp_min(0).sqrt()  # (T,): ||g_i||
        v = torch.linalg.pinv(G, hermitian=True, rtol=self.rtol) @ n  # (T,)
        total = v.sum()
        if not total.abs() > 1e-12 * v.abs().sum():
            return G.new_full((G.shape[0],), 1.0 / G.shape[0])  # (T,)
        return v / total  # (T,)
