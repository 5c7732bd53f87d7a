"""Reptile's Taylor analysis (Nichol et al. 2018, §5.1), computed exactly and to first order in alpha.

Two SGD steps from ``phi_1`` on minibatches 1 and 2 of one task: ``phi_2 = phi_1 - alpha L_1'(phi_1)``,
``phi_3 = phi_2 - alpha L_2'(phi_2)``. With ``gbar_i = L_i'(phi_1)`` and ``Hbar_i = L_i''(phi_1)``:

    g_MAML    = d/dphi_1 L_2(phi_2)     = gbar_2 - alpha Hbar_2 gbar_1 - alpha Hbar_1 gbar_2 + O(alpha^2)
    g_FOMAML  = L_2'(phi_2)             = gbar_2 - alpha Hbar_2 gbar_1                  + O(alpha^2)
    g_Reptile = (phi_1 - phi_3) / alpha = gbar_1 + gbar_2 - alpha Hbar_2 gbar_1         + O(alpha^2)

For ``k`` steps, in expectation over i.i.d. minibatches, with AvgGrad = E[gbar_1] and
AvgGradInner = E[Hbar_2 gbar_1]: MAML = AvgGrad - 2(k-1) alpha AvgGradInner,
FOMAML = AvgGrad - (k-1) alpha AvgGradInner, Reptile = k AvgGrad - k(k-1)/2 alpha AvgGradInner.

Parameters here are one flat vector, so the same code serves any model through ``torch.func``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, hessian

Loss = Callable[[Tensor], Tensor]


def flat_loss(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
              ) -> tuple[Loss, Tensor]:
    """``loss(phi)`` of ``model`` on ``(x, y)`` as a function of one flat parameter vector, and the model's ``phi``."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    phi = torch.cat([p.detach().reshape(-1) for p in model.parameters()])  # (n,)

    def loss(flat: Tensor) -> Tensor:
        chunks = torch.split(flat, [s.numel() for s in shapes])
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        return loss_fn(functional_call(model, params, (x,)), y)
    return loss, phi


def exact_gradients(losses: Sequence[Loss], phi: Tensor, alpha: float) -> dict[str, Tensor]:
    """The update directions of §5.1 for ``k = len(losses)`` SGD steps, exactly, by automatic differentiation.

    ``maml``: d/dphi_1 of L_k(phi_k); ``fomaml``: L_k'(phi_k); ``reptile``: (phi_1 - phi_{k+1}) / alpha, where
    phi_{j+1} = phi_j - alpha L_j'(phi_j) and minibatch j has loss ``losses[j - 1]``.
    """
    if len(losses) < 2:
        raise ValueError(f"losses must hold at least two minibatch losses, got {len(losses)}")

    def run(p: Tensor, count: int) -> Tensor:
        for loss in losses[:count]:
            p = p - alpha * grad(loss)(p)
        return p

    k = len(losses)
    phi_k = run(phi, k - 1)
    return {"maml": grad(lambda p: losses[-1](run(p, k - 1)))(phi), "fomaml": grad(losses[-1])(phi_k),
            "reptile": (phi - run(phi, k)) / alpha}


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
        exact, approx = exact_gradients([loss1, loss2], phi, alpha), taylor_gradients(loss1, loss2, phi, alpha)
        for k in out:
            out[k].append(torch.linalg.vector_norm(exact[k] - approx[k]).item())
    return out


__all__ = ["exact_gradients", "expected_gradients", "flat_loss", "taylor_errors", "taylor_gradients"]
