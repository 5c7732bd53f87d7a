"""Gradient checkpointing of one inner step that works under :func:`torch.func.vmap` and :func:`torch.func.grad`.

:func:`torch.utils.checkpoint.checkpoint` relies on saved-tensor hooks, which ``torch.func.grad`` refuses
("don't yet support saved tensor hooks", torch 2.13), so it cannot checkpoint a vmapped inner loop.
:func:`recomputed` does the same by hand (Chen et al. 2016, "Training deep nets with sublinear memory cost",
§3): an :class:`torch.autograd.Function` whose forward runs the step without recording a graph and keeps only
its inputs; its backward runs the step again under :func:`torch.func.vjp` and pulls the incoming cotangent
through it. ``generate_vmap_rule`` lets ``vmap`` batch both, so the vmapped inner loop keeps at most one
step's graph at a time in the backward, at the price of computing each step twice.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vjp
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..nn.norms import primitive_norms, updates_running_stats

# step(*args) -> (differentiable outputs, auxiliary outputs that carry no gradient), any nesting of dicts/tuples
Step = Callable[..., tuple[Any, Any]]


class _Recompute(torch.autograd.Function):
    """``fn(*tensors) -> (outputs, aux)`` with only ``tensors`` saved; the backward recomputes ``fn``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(fn: Callable, *tensors: Tensor) -> tuple[Tensor, ...]:
        with torch.no_grad():  # under vmap the forward may run with grad mode on: keep no graph
            outputs, aux = fn(*tensors)
        return (*outputs, *aux)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.fn, ctx.n = inputs[0], inputs[0].n_out  # set by fn's run in forward
        ctx.save_for_backward(*inputs[1:])
        ctx.mark_non_differentiable(*output[ctx.n:])

    @staticmethod
    def backward(ctx, *cotangents: Tensor):
        # the normalisation routing of mapping.nn.norms is needed again: the backward may run under vmap
        saved = [t.detach() for t in ctx.saved_tensors]  # the recomputation builds no graph at the outer level
        real = [i for i, t in enumerate(saved) if t.is_floating_point()]  # labels etc. stay constants

        def of_real(*tensors: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
            full = list(saved)
            for i, t in zip(real, tensors):
                full[i] = t
            return ctx.fn(*full)
        with primitive_norms():  # torch.func.vjp differentiates whatever the grad mode
            _, pull, _ = vjp(of_real, *(saved[i] for i in real), has_aux=True)
            pulled = dict(zip(real, pull(tuple(cotangents[:ctx.n]))))
        return (None, *(pulled.get(i) for i in range(len(saved))))


def recomputed(step: Step, *args: Any) -> tuple[Any, Any]:
    """``step(*args)`` whose graph is not kept: the backward runs ``step`` again (one extra forward).

    ``args`` and the result ``(outputs, aux)`` may nest dicts, lists and tuples; their tensors are the
    differentiable inputs and outputs (``aux``, e.g. a loss value for logging, gets no gradient), other leaves
    (floats) are constants. ``step`` must be a pure function of ``args`` (no in-place buffer updates, no
    randomness), since it runs twice.
    """
    leaves, spec = tree_flatten(args)
    where = [i for i, v in enumerate(leaves) if isinstance(v, Tensor)]
    out_spec: list = []

    def flat(*tensors: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        full = list(leaves)
        for i, t in zip(where, tensors):
            full[i] = t
        outputs, aux = step(*tree_unflatten(full, spec))
        out, o_spec = tree_flatten(outputs)
        extra, a_spec = tree_flatten(aux)
        out_spec[:] = [o_spec, a_spec]
        flat.n_out = len(out)
        return tuple(out), tuple(extra)

    result = _Recompute.apply(flat, *(leaves[i] for i in where))
    n = flat.n_out
    return tree_unflatten(list(result[:n]), out_spec[0]), tree_unflatten(list(result[n:]), out_spec[1])


def check_checkpoint(checkpoint: object, module: nn.Module | None, execution: str) -> None:
    """``checkpoint`` is a bool, and the module does not update buffers in a step that would run twice."""
    if not isinstance(checkpoint, bool):
        raise ValueError(f"checkpoint must be a bool (recompute each inner step in the backward), got {checkpoint!r}")
    if not checkpoint or module is None:
        return
    for name, sub in module.named_modules():
        if updates_running_stats(sub):
            raise ValueError(
                f"checkpoint=True with execution={execution!r} cannot run module {name or type(module).__name__!r} "
                f"({type(sub).__name__}, train() mode with running statistics): recomputing each inner step in the "
                "backward would update its running statistics a second time. Use checkpoint=False, or batch "
                "statistics only (track_running_stats=False, Conv4(bn='batch')), or .eval()")


__all__ = ["check_checkpoint", "recomputed"]
