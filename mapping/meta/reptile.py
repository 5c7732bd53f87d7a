"""Reptile (Nichol, Achiam & Schulman 2018, Algorithm 1/2).

For each task, run ``k`` steps of SGD from ``theta`` to get ``theta'_i``, then move towards them:

    theta <- theta + beta * mean_i(theta'_i - theta)                                       (Reptile, Alg. 2)

The article's §3.2.2 writes ``g = mean(theta - theta'_i)`` and ``theta <- theta + beta g``, which moves *away*
from the adapted weights (erratum 1 in the book); :func:`article_reptile_update` keeps that form only so the
book can show it diverge. :meth:`Reptile.meta_grad` stores ``theta - mean theta'`` in ``.grad`` so that any
``torch.optim`` optimizer takes the step (plain SGD with ``lr=beta`` reproduces the update above exactly).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.tasks import TaskBatch
from .checks import check_finite_inner
from .functional import DEFAULT_CHUNK, DEFAULT_EXECUTION, Alpha, Forward, LossFn, Params, batched_inner_loop
from .maml import MetaLearner


def adapted_params(forward: Forward, loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, *, steps: int,
                   alpha: Alpha, execution: str = DEFAULT_EXECUTION,
                   chunk_size: int = DEFAULT_CHUNK) -> tuple[Params, Tensor]:
    """``theta'_i`` for every task: ``steps`` SGD steps on ``(x, y)`` of shape ``(tasks, shots, ...)``.

    Returns the adapted parameters ``{name: (tasks, *shape)}`` and the inner losses ``(tasks, steps)``.
    No graph is kept, so ``"chunk"`` and ``"loop"`` (see :mod:`mapping.meta.functional`) bound the memory.
    """
    detached = {k: v.detach() for k, v in params.items()}
    with torch.no_grad():
        fast, inner, _ = batched_inner_loop(forward, loss_fn, detached, x, y, steps=steps, alpha=alpha,
                                            first_order=True, execution=execution, chunk_size=chunk_size)
    check_finite_inner(inner)
    return fast, inner


def reptile_direction(params: Params, adapted: Params) -> Params:
    """``mean_i(theta'_i - theta)``: the direction Reptile moves ``theta`` in (adapted has a leading tasks dim)."""
    return {k: (adapted[k] - params[k].detach()).mean(0) for k in params}


def reptile_update(params: Params, adapted: Params, beta: float) -> Params:
    """``theta + beta * mean_i(theta'_i - theta)`` (Nichol et al. 2018, Algorithm 2)."""
    direction = reptile_direction(params, adapted)
    return {k: params[k].detach() + beta * direction[k] for k in params}


def article_reptile_update(params: Params, adapted: Params, beta: float) -> Params:
    """The article's §3.2.2, lines 13-14: ``g = mean(theta - theta'_i)``, ``theta <- theta + beta g``. Wrong sign."""
    g = {k: (params[k].detach() - adapted[k]).mean(0) for k in params}
    return {k: params[k].detach() + beta * g[k] for k in params}


class Reptile(MetaLearner):
    """Reptile around any ``nn.Module`` (learn2learn users write the same loop by hand).

    >>> reptile = Reptile(model, alpha=0.01, steps=5)
    >>> optimizer.zero_grad(); reptile.meta_grad(batch, F.mse_loss); optimizer.step()
    >>> learner = reptile.clone(); learner.adapt(F.mse_loss(learner(x_s), y_s))   # as for MAML

    ``execution`` and ``chunk_size`` as for :class:`~mapping.meta.MAML`; ``clone`` (first-order: Reptile has no
    Hessian term) and ``adaptation_curve`` come from :class:`~mapping.meta.MetaLearner`.
    """

    first_order = True

    def __init__(self, module: nn.Module, alpha: float = 0.01, steps: int = 5, use_query: bool = True, *,
                 execution: str = DEFAULT_EXECUTION, chunk_size: int = DEFAULT_CHUNK) -> None:
        super().__init__(module, alpha, steps, execution, chunk_size)
        self.use_query = use_query

    def meta_grad(self, batch: TaskBatch, loss_fn: LossFn) -> Tensor:
        """Set each parameter's ``.grad`` to ``theta - mean_i theta'_i``; return the mean first inner loss.

        With ``use_query`` the inner loop trains on support and query together (Reptile has no query set).
        """
        if not isinstance(batch, TaskBatch):
            raise ValueError(f"batch must be a mapping.data.TaskBatch, got {type(batch).__name__}")
        x, y = batch.support_x, batch.support_y
        if self.use_query:
            x = torch.cat([x, batch.query_x], 1)  # (tasks, support + query, ...)
            y = torch.cat([y, batch.query_y], 1)
        params = self.params()
        adapted, inner = adapted_params(self._forward, loss_fn, params, x, y, steps=self.steps, alpha=self.alpha,
                                        execution=self.execution, chunk_size=self.chunk_size)
        direction = reptile_direction(params, adapted)
        for k, p in params.items():
            p.grad = -direction[k]
        return inner[:, 0].mean() if inner.numel() else x.new_zeros(())


__all__ = ["Reptile", "adapted_params", "article_reptile_update", "reptile_direction", "reptile_update"]
