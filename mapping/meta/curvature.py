"""Why fine-tuning diverges: the curvature of a task's support loss in the parameters the inner loop adapts.

Gradient descent with rate ``alpha`` on a quadratic loss with Hessian ``H`` multiplies the error along each
eigenvector of ``H`` by ``1 - alpha * lambda_i`` per step, so it converges when every ``alpha * lambda_i``
lies in ``(0, 2)`` and the loss grows geometrically, by ``(1 - alpha * lambda_max)^2`` per step, when
``alpha * lambda_max > 2`` (e.g. Nesterov 2004, §1.2.3; Goodfellow et al. 2016, §4.3.1). With the MSE loss
and only a linear head adapted (ANIL, Raghu et al. 2020) the support loss *is* quadratic in the adapted
parameters, so ``alpha * lambda_max > 2`` at the initialisation is necessary for the support loss to grow;
for the whole network it is the local picture at the start of fine-tuning.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import functional_call, hessian, vmap

from .maml import MetaLearner


def inner_curvature(learner: MetaLearner, loss_fn: Callable[[Tensor, Tensor], Tensor], support_x: Tensor,
                    support_y: Tensor) -> Tensor:
    """Largest eigenvalue of each task's support-loss Hessian in the adapted parameters, at the learner's
    initialisation: ``(tasks,)`` from ``support_x`` ``(tasks, shots, ...)`` and ``support_y``.

    Exact (``torch.func.hessian``, vmapped over tasks): its cost grows with the square of the number of
    adapted parameters, meant for heads and small networks.
    """
    if support_x.dim() < 2 or support_x.shape[:2] != support_y.shape[:2]:
        raise ValueError(f"support_x and support_y must be shaped (tasks, shots, ...) with equal leading "
                         f"dimensions, got {tuple(support_x.shape)} and {tuple(support_y.shape)}")
    params = {k: v.detach() for k, v in learner.params().items()}
    names = list(learner.adapt_names or params)
    shapes = [params[k].shape for k in names]
    theta = torch.cat([params[k].reshape(-1) for k in names])  # (n,)

    def support_loss(flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
        chunks = torch.split(flat, [s.numel() for s in shapes])
        fast = dict(params, **{k: c.view(s) for k, c, s in zip(names, chunks, shapes)})
        return loss_fn(functional_call(learner.module, fast, (x,)), y)

    h = vmap(hessian(support_loss), in_dims=(None, 0, 0))(theta, support_x, support_y)  # (tasks, n, n)
    return torch.linalg.eigvalsh(h)[:, -1]  # (tasks,)


__all__ = ["inner_curvature"]
