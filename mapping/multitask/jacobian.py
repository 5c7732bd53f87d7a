"""Per-task gradients in one backward pass: the Jacobian of T task losses w.r.t. shared tensors.

Row ``t`` of ``J`` is the gradient of task ``t``'s loss w.r.t. the shared parameters (or a shared representation),
flattened and concatenated: ``J[t] = d L_t / d theta`` (Sener & Koltun 2018, §3; Quinton & Rey 2024).

One pass (``one_pass=True``): one call of ``torch.autograd.grad(losses, inputs, grad_outputs=I_T,
is_grads_batched=True)``, i.e. ``vmap`` over the vector-Jacobian product with the T rows of the identity as
cotangents. The forward graph is shared; every backward node runs once on a batch of T cotangents. The loop
(``one_pass=False``) is one ``torch.autograd.grad`` per task: the reference, and the benchmark's baseline.

Cost. Both do the same arithmetic on the shared trunk (T vector-Jacobian products); the batched pass saves T - 1
calls of the autograd engine and pays in two ways. Every head sees all T cotangents (head t of a hard-sharing net
gets a (T, ...) batch of which only row t is non-zero), so head work grows as T^2 where the loop's grows as T (the
loop differentiates each loss alone when ``losses`` is a sequence of separately computed scalars; a 1-D tensor's
``losses[t]`` reaches every head through ``stack``). And torch's batching rules for the backward of convolution,
batch norm and max-pooling run one kernel call per cotangent and concatenate the results. On a 2-core CPU
(``benchmarks/multitask_grads.py``, ``results/benchmark_multitask_grads.json``, float32, 2 threads) the one pass
took 1.1x the loop's time at T = 2 and 1.6x at T = 10 on a 64-256-256 MLP (batch 256; 3.1x at T = 40, the heads'
T^2), and 1.7x to 3x on Conv-4 (batch 64, 28x28) for T from 2 to 40: the loop's products already run at 39 to
47% of the rate of one large matrix product, so even an ideal route could be at most about 2.2x faster. The
batched pass is for accelerators, where each small kernel costs a launch (not measured here); on a CPU pass the
losses as a list and ``one_pass=False``.

The Gramian ``G = J J^T`` (T, T) holds every inner product ``g_i . g_j``; the aggregators of
:mod:`mapping.multitask.aggregators` need only G.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

_VMAP_ERRORS = ("batching rule", "vmap", "batchedtensor", "functorch", "is_grads_batched")


def check_losses(losses: object) -> tuple[Tensor, list[Tensor] | None]:
    """``losses`` as a (T,) tensor, and the list of scalars when given as a sequence (else ``None``).

    Raises ``ValueError`` unless ``losses`` is a non-empty 1-D tensor or sequence of scalar tensors, and
    ``FloatingPointError`` naming the first task whose loss is nan or inf.
    """
    scalars = None
    if isinstance(losses, Tensor):
        if losses.dim() != 1:
            raise ValueError(f"losses must be a 1-D tensor of T task losses (or a sequence of T scalar tensors), "
                             f"got a tensor of shape {tuple(losses.shape)}; use torch.stack([loss_1, ..., loss_T])")
        stacked = losses
    elif isinstance(losses, Sequence) and not isinstance(losses, str):
        for t, loss in enumerate(losses):
            if not isinstance(loss, Tensor) or loss.dim() != 0:
                shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
                raise ValueError(f"losses[{t}] must be a scalar tensor (one task's mean loss), got {shape}")
        scalars = list(losses)
        stacked = torch.stack(scalars) if scalars else torch.zeros(0)  # (T,)
    else:
        raise ValueError(f"losses must be a 1-D tensor of T task losses or a sequence of T scalar tensors, "
                         f"got {type(losses).__name__}")
    if stacked.numel() == 0:
        raise ValueError("losses is empty: give at least one task loss")
    if not stacked.is_floating_point():
        raise ValueError(f"losses must hold floating-point values, got {stacked.dtype}")
    if not stacked.requires_grad:
        raise ValueError("losses do not require grad (computed under torch.no_grad() or detached): no task "
                         "gradient can be taken")
    finite = torch.isfinite(stacked.detach())  # (T,)
    if not finite.all():
        t = int((~finite).nonzero()[0])
        raise FloatingPointError(f"losses[{t}] (task {t}) is not finite ({stacked[t].item()}); check that task's "
                                 "data and head, or lower the learning rate")
    return stacked, scalars


def check_inputs(inputs: object, name: str = "inputs") -> list[Tensor]:
    """``inputs`` (a tensor or an iterable of tensors that require grad) as a non-empty list."""
    items = [inputs] if isinstance(inputs, Tensor) else list(inputs) if isinstance(inputs, Iterable) else None
    if items is None:
        raise ValueError(f"{name} must be a tensor or an iterable of tensors (e.g. model.trunk.parameters()), "
                         f"got {type(inputs).__name__}")
    if not items:
        raise ValueError(f"{name} is empty: give the shared parameters (or the shared representation) to "
                         "differentiate w.r.t.; a generator such as model.parameters() can be read only once")
    for i, x in enumerate(items):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name}[{i}] must be a tensor, got {type(x).__name__}")
        if not x.requires_grad:
            raise ValueError(f"{name}[{i}] (shape {tuple(x.shape)}) does not require grad: give parameters or "
                             "tensors that the losses were computed from")
    return items


def _is_vmap_error(err: RuntimeError) -> bool:
    return any(key in str(err).lower() for key in _VMAP_ERRORS)


def _loop_blocks(stacked: Tensor, scalars: list[Tensor] | None, inputs: list[Tensor],
                 retain_graph: bool) -> list[Tensor | None]:
    """One ``torch.autograd.grad`` per task; ``None`` for an input that no loss reaches."""
    rows = scalars if scalars is not None else list(stacked)  # T scalars
    per_task = []
    for t, loss in enumerate(rows):
        keep = retain_graph or t < len(rows) - 1
        grads = (torch.autograd.grad(loss, inputs, retain_graph=keep, allow_unused=True) if loss.requires_grad
                 else (None,) * len(inputs))
        per_task.append(grads)
    blocks = []
    for i, x in enumerate(inputs):
        got = [g[i] for g in per_task]
        blocks.append(None if all(g is None for g in got) else torch.stack(
            [torch.zeros_like(x) if g is None else g for g in got]))  # (T, *x.shape)
    return blocks


def _blocks(stacked: Tensor, scalars: list[Tensor] | None, inputs: list[Tensor], retain_graph: bool,
            one_pass: bool) -> list[Tensor | None]:
    if not one_pass:
        return _loop_blocks(stacked, scalars, inputs, retain_graph)
    eye = torch.eye(stacked.shape[0], dtype=stacked.dtype, device=stacked.device)  # (T, T)
    try:  # the graph is kept so that the loop can still run if the batched pass fails half-way
        return list(torch.autograd.grad(stacked, inputs, grad_outputs=eye, retain_graph=True, allow_unused=True,
                                        is_grads_batched=True))  # each (T, *input.shape) or None
    except RuntimeError as err:
        if not _is_vmap_error(err):
            raise
        reason = str(err).strip().splitlines()[0]
    warnings.warn(f"task_jacobian: the batched backward failed ({reason}); falling back to one backward per task "
                  "(one_pass=False)", RuntimeWarning, stacklevel=4)
    return _loop_blocks(stacked, scalars, inputs, retain_graph)


def jacobian_blocks(losses: Tensor | Sequence[Tensor], inputs: Tensor | Iterable[Tensor], *,
                    retain_graph: bool = True, one_pass: bool = True) -> list[Tensor | None]:
    """:func:`task_jacobian` as one (T, *input.shape) block per input, ``None`` where no loss reaches the input.

    With ``one_pass`` the batched backward keeps the graph even when ``retain_graph`` is off (it is freed with the
    losses), so that the per-task loop can take over, after one warning naming the reason, if an op of the graph
    has no batching rule.
    """
    stacked, scalars = check_losses(losses)
    return _blocks(stacked, scalars, check_inputs(inputs), retain_graph, one_pass)


def task_jacobian(losses: Tensor | Sequence[Tensor], inputs: Tensor | Iterable[Tensor], *,
                  retain_graph: bool = True, one_pass: bool = True) -> Tensor:
    """``J`` (T, P): row t is ``d losses[t] / d inputs``, flattened and concatenated over ``inputs``.

    ``losses``: a 1-D tensor of T task losses, or a sequence of T scalar tensors (stacked). ``inputs``: a tensor
    or an iterable of tensors (the shared parameters, or a shared representation z). Inputs that no loss reaches
    give zero columns. ``one_pass``: one batched backward (vmap over the vector-Jacobian product, with the
    identity's rows as cotangents) instead of T; ``retain_graph`` as in ``torch.autograd.grad``.
    """
    stacked, scalars = check_losses(losses)
    inputs = check_inputs(inputs)
    T = stacked.shape[0]
    blocks = _blocks(stacked, scalars, inputs, retain_graph, one_pass)
    cols = [x.new_zeros(T, x.numel()) if b is None else b.reshape(T, -1) for x, b in zip(inputs, blocks)]  # (T, P_i)
    return torch.cat(cols, dim=1)  # (T, P)


def gramian(jacobian: Tensor) -> Tensor:
    """``G = J J^T`` (T, T): ``G[i, j] = g_i . g_j``, the inner products of the task gradients."""
    if not isinstance(jacobian, Tensor) or jacobian.dim() != 2:
        shape = tuple(jacobian.shape) if isinstance(jacobian, Tensor) else type(jacobian).__name__
        raise ValueError(f"jacobian must be a 2-D tensor (tasks, parameters), got {shape}")
    return jacobian @ jacobian.T  # (T, T)


__all__ = ["check_inputs", "check_losses", "gramian", "jacobian_blocks", "task_jacobian"]
