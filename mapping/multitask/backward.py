"""``mtl_backward``: the one call that replaces ``loss.backward()`` in a multi-task training step.

Shaped like TorchJD's ``mtl_backward`` and LibMTL's ``backward``: the shared parameters receive an aggregated
combination of the task gradients, every task-specific parameter the gradient of its own (unweighted) loss::

    z = trunk(x)                                                     # (batch, features)
    losses = torch.stack([loss_fn(head(z), y) for head, y in zip(heads, targets)])  # (T,)
    optimizer.zero_grad()
    weights = mtl_backward(losses, trunk.parameters(), UPGrad())     # (T,), to log
    optimizer.step()

Two modes.

* Parameters (default): ``J = task_jacobian(losses, shared)`` (T, P), then ``d = w^T J`` with
  ``w = aggregator.weights(J J^T)`` is added to the shared parameters' ``.grad``. Costs T vector-Jacobian products
  through the trunk and heads (batched with ``one_pass``, else one backward per task) and a (T, P) Jacobian in memory.
* Representation (``features=z``; MGDA-UB, Sener & Koltun 2018, §3.3): the weights come from the Gramian of the
  Jacobian w.r.t. the shared representation z (T, batch * features), which only the heads are differentiated for,
  then one ordinary backward of ``sum_i w_i L_i`` gives the shared gradient ``w^T J``: about the cost of one
  ``loss.backward()`` plus T head backward passes (with ``one_pass`` each head sees all T cotangents, T^2 head work:
  on CPU pass the losses as a list and ``one_pass=False``). The weights solve the aggregator's problem for the
  z-gradients, not for the parameter gradients: the update is ``aggregator(J)`` only when the two agree. For MGDA,
  Sener & Koltun's Theorem 1: if dz/dtheta has full rank, the MGDA-UB direction decreases every task loss unless
  the weights already make the z-gradients cancel (Pareto stationarity).

Task-specific parameters (``tasks_params``, or by default every other leaf tensor the losses reach, found by walking
the autograd graph) receive ``d (sum_i L_i) / d theta``: each head its own loss's gradient (a parameter reached by
several losses gets the sum). Gradients accumulate into ``.grad`` like ``backward``; shared parameters that no loss
reaches keep their ``.grad``. Every check runs before any ``.grad`` changes.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .jacobian import _blocks, check_inputs, check_losses

__all__ = ["mtl_backward", "task_leaves"]


def task_leaves(losses: Tensor, exclude: Iterable[Tensor] = ()) -> list[Tensor]:
    """The leaf tensors requiring grad that ``losses`` reach through the autograd graph, except ``exclude``."""
    skip = {id(t) for t in exclude}
    seen, found, stack = set(), {}, [losses.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        leaf = getattr(fn, "variable", None)  # AccumulateGrad nodes hold their leaf
        if leaf is not None and id(leaf) not in skip:
            found[id(leaf)] = leaf
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return list(found.values())


def _accumulate(tensors: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
    with torch.no_grad():
        for t, g in zip(tensors, grads):
            if g is None:
                continue
            if t.grad is None:
                t.grad = g.detach().clone()
            else:
                t.grad.add_(g)


def _check_aggregator(aggregator: object) -> None:
    if not callable(getattr(aggregator, "weights", None)):
        raise ValueError(f"aggregator must have a weights(gramian) method (e.g. mapping.multitask.aggregators."
                         f"UPGrad()), got {type(aggregator).__name__}")


def _weights(aggregator, blocks: list[Tensor | None], T: int) -> Tensor:
    """``aggregator.weights(J J^T)`` with the Gramian summed block by block (no concatenated J)."""
    flat = [b.reshape(T, -1) for b in blocks if b is not None]  # each (T, P_i)
    G = sum(f @ f.T for f in flat)  # (T, T)
    return aggregator.weights(G).detach()  # (T,)


def mtl_backward(losses: Tensor | Sequence[Tensor], shared: Iterable[Tensor], aggregator, *,
                 features: Tensor | Iterable[Tensor] | None = None,
                 tasks_params: Iterable[Tensor] | None = None, one_pass: bool = True) -> Tensor:
    """Accumulate the aggregated shared gradient and each task's own head gradient; return the (T,) weights.

    ``losses``: T task losses (a 1-D tensor or a sequence of scalars). ``shared``: the shared parameters.
    ``aggregator``: any object with ``weights(gramian) -> (T,)`` (:mod:`mapping.multitask.aggregators`).
    ``features``: the shared representation(s) z; if given, the weights come from the Gramian w.r.t. z (MGDA-UB
    mode). ``tasks_params``: the task-specific parameters; by default every other leaf the losses reach.
    ``one_pass``: the Jacobian (w.r.t. ``shared``, or ``features``) in one batched backward, or one per task (see
    :mod:`mapping.multitask.jacobian` for when each is faster).
    """
    stacked, scalars = check_losses(losses)
    shared = check_inputs(shared, "shared")
    _check_aggregator(aggregator)
    feats = None if features is None else check_inputs(features, "features")
    shared_ids = {id(p) for p in shared}
    heads = task_leaves(stacked, exclude=shared + (feats or [])) if tasks_params is None else list(tasks_params)
    if tasks_params is not None and heads:
        heads = check_inputs(heads, "tasks_params")
        both = [i for i, p in enumerate(heads) if id(p) in shared_ids]
        if both:
            raise ValueError(f"tasks_params[{both[0]}] is also in shared: a parameter is either shared (aggregated "
                             "gradient) or task-specific (its own loss's gradient), not both")
    T = stacked.shape[0]
    if feats is None:
        blocks = _blocks(stacked, scalars, shared, True, one_pass)  # each (T, *p.shape) or None
        if all(b is None for b in blocks):
            raise ValueError("no loss depends on shared: pass the parameters of the shared trunk")
        w = _weights(aggregator, blocks, T)  # (T,)
        shared_grads = [None if b is None else torch.tensordot(w.to(b.dtype), b, 1) for b in blocks]  # p.shape each
    else:
        blocks = _blocks(stacked, scalars, feats, True, one_pass)  # each (T, *z.shape) or None
        if all(b is None for b in blocks):
            raise ValueError("no loss depends on features: pass the shared representation z the heads read")
        w = _weights(aggregator, blocks, T)  # (T,)
        shared_grads = torch.autograd.grad(stacked, shared, grad_outputs=w.to(stacked.dtype), retain_graph=True,
                                           allow_unused=True)  # d (sum_i w_i L_i) / d theta
        if all(g is None for g in shared_grads):
            raise ValueError("no loss depends on shared: pass the parameters of the shared trunk")
    head_grads = torch.autograd.grad(stacked.sum(), heads, allow_unused=True) if heads else []
    _accumulate(shared, shared_grads)
    _accumulate(heads, head_grads)
    return w
