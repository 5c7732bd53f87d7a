"""Discrepancies between source and target features, to add to the task loss: multi-kernel MMD and CORAL.

* :func:`mmd`: the squared maximum mean discrepancy with a mixture of Gaussian kernels, as DAN (Long, Cao, Wang &
  Jordan 2015, "Learning transferable features with deep adaptation networks", ICML, §3, eqs. (2)-(3)) uses on
  deep features. The estimates are Gretton, Borgwardt, Rasch, Schölkopf & Smola 2012 ("A kernel two-sample
  test", JMLR 13), Lemma 6: the biased V-statistic of eq. (5), squared (``unbiased=False``), and the unbiased
  U-statistic of eq. (3) (``unbiased=True``), both quadratic in the batch size (DAN's eq. (6) is a linear-time
  version of the unbiased one).
* :func:`coral`: Deep CORAL (Sun & Saenko 2016, "Deep CORAL: correlation alignment for deep domain adaptation",
  ECCV workshops), eq. (1): ``||C_S - C_T||_F^2 / (4 d^2)`` with the unbiased covariances of eqs. (2)-(3).

Both take features ``x (m, d)`` of the source and ``y (n, d)`` of the target and return a scalar that the
gradient flows through, to both arguments.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

DEFAULT_KERNELS = (0.25, 0.5, 1.0, 2.0, 4.0)  # bandwidth^2 as multiples of the heuristic, a factor 2 apart
HEURISTICS = ("median", "mean")


def check_samples(x: object, y: object, least: int = 1, names: tuple[str, str] = ("x", "y")) -> None:
    """``x (m, d)`` and ``y (n, d)``: 2-D float tensors with the same ``d`` and at least ``least`` rows each."""
    for name, z in zip(names, (x, y)):
        if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
            got = f"shape {tuple(z.shape)}, {z.dtype}" if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"{name} must be a 2-D float tensor (examples, features); flatten feature maps "
                             f"first, got {got}")
        if len(z) < least:
            raise ValueError(f"{name} must have at least {least} rows (examples), got {len(z)}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same feature size, got {x.shape[1]} and "
                         f"{y.shape[1]}")


def check_kernels(kernels: object) -> tuple[float, ...]:
    """``kernels``: a non-empty sequence of finite positive bandwidth multiples."""
    if isinstance(kernels, (int, float)) and not isinstance(kernels, bool):
        kernels = (kernels,)
    if not isinstance(kernels, Sequence) or not kernels or not all(
            isinstance(k, (int, float)) and not isinstance(k, bool) and 0 < k < math.inf for k in kernels):
        raise ValueError(f"kernels must be a non-empty sequence of finite positive numbers (multiples of the "
                         f"bandwidth heuristic), got {kernels!r}")
    return tuple(float(k) for k in kernels)


def check_bandwidth(bandwidth: object) -> float | None:
    """``bandwidth``: ``None`` (use the heuristic) or a finite positive squared length."""
    if bandwidth is not None and (isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float))
                                  or not 0 < bandwidth < math.inf):
        raise ValueError(f"bandwidth must be None or a finite positive squared length, got {bandwidth!r}")
    return bandwidth


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``D[i, j] = ||x_i - y_j||^2`` from the differences themselves (no ``|x|^2 + |y|^2 - 2 x.y`` cancellation)."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").pow(2)  # (m, n)


def bandwidth_heuristic(d2: Tensor, heuristic: str = "median") -> Tensor:
    """The median (Gretton et al. 2012's median heuristic) or mean of the off-diagonal entries of ``d2 (N, N)``.

    Detached: the bandwidth is a constant of each step, not differentiated through.

    Falls back to 1 when every distance is 0 (all the points coincide: every Gaussian kernel is then 1).
    """
    if heuristic not in HEURISTICS:
        raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")
    n = d2.shape[0]
    off = d2.detach()[~torch.eye(n, dtype=torch.bool, device=d2.device)]  # (N (N - 1),)
    if off.numel() == 0:
        return d2.new_ones(())  # ()
    h = off.median() if heuristic == "median" else off.mean()  # ()
    if h <= 0:
        h = off.mean()
    return h if h > 0 else d2.new_ones(())  # ()


def gaussian_kernel(d2: Tensor, sigma2: Tensor | float, kernels: Sequence[float]) -> Tensor:
    """The mean of ``exp(-d2 / (2 m sigma2))`` over the multiples ``m`` in ``kernels``: same shape as ``d2``."""
    scales = torch.as_tensor(kernels, dtype=d2.dtype, device=d2.device) * sigma2  # (U,) sigma_u^2
    return torch.exp(-d2.unsqueeze(-1) / (2 * scales)).mean(-1)  # (..., U) -> (...)


def mmd(x: Tensor, y: Tensor, kernels: Sequence[float] = DEFAULT_KERNELS, *, unbiased: bool = False,
        heuristic: str = "median", bandwidth: float | None = None) -> Tensor:
    """Squared multi-kernel MMD between samples ``x (m, d)`` and ``y (n, d)`` (DAN; Gretton et al. 2012, Lemma 6).

    ``k(a, b) = (1/U) sum_u exp(-||a - b||^2 / (2 sigma_u^2))`` with ``sigma_u^2 = kernels[u] * h``: ``h`` is
    ``bandwidth`` (a squared length) if given, else the ``heuristic`` (median or mean) of the squared distances
    between all pairs of the pooled sample, detached (a constant of each step, like DAN's fixed kernel family).
    Equal weights ``1/U`` (DAN learns them; the Transfer-Learning-Library fixes them). Biased, eq. (5) squared::

        1/m^2 sum_ij k(x_i, x_j) + 1/n^2 sum_ij k(y_i, y_j) - 2/(mn) sum_ij k(x_i, y_j)     >= 0, = 0 iff x == y

    ``unbiased=True``, eq. (3): the first two means over ``i != j`` only (``m, n >= 2``); can be negative.
    """
    check_samples(x, y, least=2 if unbiased else 1)
    kernels = check_kernels(kernels)
    if heuristic not in HEURISTICS:
        raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")
    if not isinstance(unbiased, bool):
        raise ValueError(f"unbiased must be True or False, got {unbiased!r}")
    m = len(x)
    z = torch.cat([x, y])  # (m + n, d)
    d2 = squared_distances(z, z)  # (m + n, m + n)
    h = bandwidth_heuristic(d2, heuristic) if check_bandwidth(bandwidth) is None else float(bandwidth)  # ()
    k = gaussian_kernel(d2, h, kernels)  # (m + n, m + n)
    kxx, kyy, kxy = k[:m, :m], k[m:, m:], k[:m, m:]  # (m, m), (n, n), (m, n)
    if not unbiased:
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()  # ()
    n = len(y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))  # ()
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))  # ()
    return within_x + within_y - 2 * kxy.mean()  # ()


class MMDLoss(nn.Module):
    """:func:`mmd` as a module: ``MMDLoss(kernels, unbiased=..., heuristic=..., bandwidth=...)(f_s, f_t)``."""

    def __init__(self, kernels: Sequence[float] = DEFAULT_KERNELS, *, unbiased: bool = False,
                 heuristic: str = "median", bandwidth: float | None = None) -> None:
        super().__init__()
        if heuristic not in HEURISTICS:
            raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")
        if not isinstance(unbiased, bool):
            raise ValueError(f"unbiased must be True or False, got {unbiased!r}")
        self.kernels, self.unbiased = check_kernels(kernels), unbiased
        self.heuristic, self.bandwidth = heuristic, check_bandwidth(bandwidth)

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        check_samples(f_s, f_t, least=2 if self.unbiased else 1, names=("f_s", "f_t"))
        return mmd(f_s, f_t, self.kernels, unbiased=self.unbiased, heuristic=self.heuristic,
                   bandwidth=self.bandwidth)

    def extra_repr(self) -> str:
        return f"kernels={self.kernels}, unbiased={self.unbiased}, heuristic={self.heuristic!r}"


def covariance(x: Tensor) -> Tensor:
    """The unbiased covariance of the rows of ``x (n, d)``: ``(X^T X - (1^T X)^T (1^T X) / n) / (n - 1)``, ``(d, d)``.

    Computed from the centred rows (the same matrix as Sun & Saenko's eq. (2), without its cancellation).
    """
    centred = x - x.mean(0, keepdim=True)  # (n, d)
    return centred.T @ centred / (len(x) - 1)  # (d, d)


def coral(x: Tensor, y: Tensor) -> Tensor:
    """Deep CORAL loss (Sun & Saenko 2016, eq. (1)): ``||C_S - C_T||_F^2 / (4 d^2)`` for ``x (m, d)``, ``y (n, d)``.

    ``C_S``, ``C_T``: the unbiased feature covariances of each domain (eqs. (2)-(3)), so ``m, n >= 2``.
    """
    check_samples(x, y, least=2)
    d = x.shape[1]
    diff = covariance(x) - covariance(y)  # (d, d)
    return diff.pow(2).sum() / (4 * d * d)  # ()


class CORALLoss(nn.Module):
    """:func:`coral` as a module: ``CORALLoss()(f_s, f_t)``."""

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        check_samples(f_s, f_t, least=2, names=("f_s", "f_t"))
        return coral(f_s, f_t)


__all__ = ["CORALLoss", "DEFAULT_KERNELS", "MMDLoss", "coral", "covariance", "mmd"]
