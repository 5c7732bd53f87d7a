"""Reptile's Taylor analysis (Nichol et al. 2018, §5.1), computed exactly and to first order in alpha.

Two SGD steps from ``phi_1`` on minibatches 1 and 2 of one task: ``phi_2 = phi_1 - alpha L_1'(phi_1)``,
``phi_3 = phi_2 - alpha L_2'(phi_2)``. With ``gbar_i = L_i'(phi_1)`` and ``Hbar_i = L_i''(phi_1)``:

    g_MAML    = d/dphi_1 L_2(phi_2)     = gbar_2 - alpha Hbar_2 gbar_1 - alpha Hbar_1 gbar_2 + O(alpha^2)
    g_FOMAML  = L_2'(phi_2)             = gbar_2 - alpha Hbar_2 gbar_1                  + O(alpha^2)
    g_Reptile = (phi_1 - phi_3) / alpha = gbar_1 + gbar_2 - alpha Hbar_2 gbar_1         + O(alpha^2)

Parameters here are one flat vector, so the same code serves any model through ``torch.func``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import grad, hessian

Loss = Callable[[Tensor], Tensor]


def exact_gradients(loss1: Loss, loss2: Loss, phi: Tensor, alpha: float) -> dict[str, Tensor]:
    """The three update directions of §5.1, computed exactly by automatic differentiation."""
    def step(p: Tensor, loss: Loss) -> Tensor:
        return p - alpha * grad(loss)(p)

    def maml_objective(p: Tensor) -> Tensor:
        return loss2(step(p, loss1))

    phi2 = step(phi, loss1)
    phi3 = step(phi2, loss2)
    return {"maml": grad(maml_objective)(phi), "fomaml": grad(loss2)(phi2), "reptile": (phi - phi3) / alpha}


def taylor_gradients(loss1: Loss, loss2: Loss, phi: Tensor, alpha: float) -> dict[str, Tensor]:
    """The same directions expanded to first order in alpha around ``phi_1`` (REFERENCE.md, Reptile §5)."""
    g1, g2 = grad(loss1)(phi), grad(loss2)(phi)  # (n,)
    h1, h2 = hessian(loss1)(phi), hessian(loss2)(phi)  # (n, n)
    return {"maml": g2 - alpha * h2 @ g1 - alpha * h1 @ g2,
            "fomaml": g2 - alpha * h2 @ g1,
            "reptile": g1 + g2 - alpha * h2 @ g1}


def expected_gradients(avg_grad: Tensor, avg_grad_inner: Tensor, alpha: float, k: int = 2) -> dict[str, Tensor]:
    """Expected directions for ``k`` inner steps (Reptile §5.1): in terms of AvgGrad and AvgGradInner."""
    return {"maml": avg_grad - 2 * (k - 1) * alpha * avg_grad_inner,
            "fomaml": avg_grad - (k - 1) * alpha * avg_grad_inner,
            "reptile": k * avg_grad - k * (k - 1) / 2 * alpha * avg_grad_inner}


def taylor_errors(loss1: Loss, loss2: Loss, phi: Tensor, alphas: list[float]) -> dict[str, list[float]]:
    """``|exact - taylor|`` for each method and each alpha: it shrinks as O(alpha^2)."""
    out: dict[str, list[float]] = {"maml": [], "fomaml": [], "reptile": []}
    for alpha in alphas:
        exact, approx = exact_gradients(loss1, loss2, phi, alpha), taylor_gradients(loss1, loss2, phi, alpha)
        for k in out:
            out[k].append(torch.linalg.vector_norm(exact[k] - approx[k]).item())
    return out
