"""A meta-loss taken one chunk of tasks at a time, with one backward per chunk: bounded memory, same API.

The meta-loss is a mean over tasks, so its gradient is the mean of per-chunk gradients. Each chunk's graph
is built, differentiated with :func:`torch.autograd.grad` and freed before the next chunk starts; the
summed gradients are handed to autograd through :class:`Precomputed`, so the caller still writes
``loss.backward()`` (or uses the loss inside a larger scalar: the backward scales the stored gradients by
the incoming one). What is lost against the one-graph ``vmap`` execution is differentiating the meta-loss
twice (``create_graph=True`` on the outer backward).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .checks import check_finite_inner

# run(inputs, start, stop) -> (sum of the query losses of tasks start..stop-1, their inner losses (chunk, steps))
ChunkFn = Callable[[dict[str, Tensor], int, int], tuple[Tensor, Tensor]]


class Precomputed(torch.autograd.Function):
    """``value`` whose gradients with respect to ``inputs`` were computed already (``grads``)."""

    @staticmethod
    def forward(ctx, value: Tensor, grads: tuple[Tensor | None, ...], *inputs: Tensor) -> Tensor:
        ctx.grads = grads
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: the stored gradients would act as constants
            raise RuntimeError("a meta-loss computed with execution='chunk' or 'loop' cannot be differentiated twice "
                               "(backward with create_graph=True); use execution='vmap' for that")
        return (None, None, *(None if g is None else grad_output * g for g in ctx.grads))


def chunked_mean(run: ChunkFn, inputs: dict[str, Tensor], tasks: int, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Mean over ``tasks`` of the per-task losses that ``run`` computes chunk by chunk; ``(loss, inner)``.

    ``inputs`` are the differentiable tensors (parameters, Meta-SGD rates); ``run`` receives detached
    copies of them. Raises ``FloatingPointError`` at the first chunk with a non-finite support loss, before
    any gradient reaches ``inputs``.
    """
    need = torch.is_grad_enabled() and any(v.requires_grad for v in inputs.values())
    names = [k for k, v in inputs.items() if need and v.requires_grad]
    total, inners = None, []
    grads: dict[str, Tensor | None] = {k: None for k in names}
    for start in range(0, tasks, chunk_size):
        stop = min(start + chunk_size, tasks)
        leaves = {k: v.detach().requires_grad_(k in grads) for k, v in inputs.items()}
        with torch.set_grad_enabled(need):
            loss_sum, inner = run(leaves, start, stop)  # (), (chunk, steps)
            inners.append(inner.detach())
            check_finite_inner(inner, first_task=start)
            parts = torch.autograd.grad(loss_sum, [leaves[k] for k in names], allow_unused=True) if names else ()
        for k, g in zip(names, parts):
            if g is not None:
                grads[k] = g if grads[k] is None else grads[k] + g
        total = loss_sum.detach() if total is None else total + loss_sum.detach()
    loss = total / tasks
    inner = torch.cat(inners)  # (tasks, steps)
    if not names:
        return loss, inner
    scaled = tuple(None if grads[k] is None else grads[k] / tasks for k in names)
    return Precomputed.apply(loss, scaled, *(inputs[k] for k in names)), inner


__all__ = ["Precomputed", "chunked_mean"]
