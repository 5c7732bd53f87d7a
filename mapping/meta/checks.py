"""Input checks of the optimization-based methods: a clear error that names the argument, before anything runs.

Every check raises ``ValueError`` (``FloatingPointError`` for non-finite values) whose message names the
argument and the form it should have. The loss check runs inside the inner loop (under ``vmap`` it sees
one task's shapes), so it costs no extra forward pass.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from ..checks import check_choice, check_int

LossFn = Callable[[Tensor, Tensor], Tensor]
EXECUTIONS = ("vmap", "chunk", "loop")


def check_alpha(alpha: object, params: Mapping[str, Tensor] | None = None) -> None:
    """``alpha``: a positive finite float, or (Meta-SGD) a dict of tensors that broadcast to ``params``."""
    if isinstance(alpha, Mapping):
        for k, rate in alpha.items():
            if not isinstance(rate, Tensor):
                raise ValueError(f"alpha[{k!r}] must be a tensor, got {type(rate).__name__}")
            if params is not None and k in params and rate.numel() != 1 and rate.shape != params[k].shape:
                raise ValueError(f"alpha[{k!r}] has shape {tuple(rate.shape)}, expected {tuple(params[k].shape)} "
                                 "(one rate per entry) or a single rate")
        return
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite float (or a dict of per-parameter rates), got {alpha!r}")


def check_steps(steps: object) -> None:
    check_int("steps", steps, 0, why="inner steps")


def check_execution(execution: object, chunk_size: object) -> None:
    """``execution`` is one of :data:`EXECUTIONS`; ``chunk_size`` a positive int."""
    check_choice("execution", execution, EXECUTIONS, why="vmap over all tasks, vmap over chunks of chunk_size "
                 "tasks, or a Python loop over tasks")
    check_int("chunk_size", chunk_size, 1, why="tasks per chunk")


def check_finite_inner(inner_losses: Tensor, first_task: int = 0) -> None:
    """Raise ``FloatingPointError`` naming the first task and inner step whose support loss is not finite.

    ``inner_losses`` has shape ``(tasks, steps)``, its row 0 being task ``first_task``; step numbers in the
    message count from 1.
    """
    bad = ~torch.isfinite(inner_losses.detach())
    if bad.any():
        task, step = (int(i) for i in bad.nonzero()[0])
        value = inner_losses[task, step].item()
        raise FloatingPointError(f"the inner-loop support loss is not finite ({value}) at inner step {step + 1} "
                                 f"of task {first_task + task}; lower alpha, check the task's data, or clip the "
                                 "inner gradients")


def _reads_integers(module: nn.Module | None) -> bool:
    """Whether the model may legitimately take integer inputs (token ids for an embedding)."""
    return module is not None and any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in module.modules())


def check_data(params: Mapping[str, Tensor], data: Mapping[str, Tensor], module: nn.Module | None = None) -> None:
    """Tasks data against the parameters: same device, same floating dtype, finite values.

    ``data`` maps argument names (``support_x``, ...) to tensors of shape ``(tasks, shots, ...)``.
    """
    floats = [p for p in params.values() if p.is_floating_point()]
    if not floats:
        return
    ref = floats[0]
    for name, t in data.items():
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but the parameters are on {ref.device}; "
                             f"move the tasks with batch.to({str(ref.device)!r})")
        is_x = name.endswith("_x")
        if t.is_floating_point() and t.dtype != ref.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but the parameters have {ref.dtype}; convert with "
                             f"batch.to(device, {ref.dtype}) or model.to({ref.dtype})")
        if is_x and not t.is_floating_point() and not t.is_complex() and not _reads_integers(module):
            raise ValueError(f"{name} holds integers ({t.dtype}) but the model computes in {ref.dtype}; "
                             f"convert the inputs with {name}.to({ref.dtype}) (images scaled to [0, 1])")
        if t.is_floating_point():
            finite = torch.isfinite(t.reshape(t.shape[0], -1)).all(1)  # (tasks,)
            if not finite.all():
                task = int((~finite).nonzero()[0])
                raise FloatingPointError(f"{name} holds a non-finite value (nan or inf) in task {task}; "
                                         "remove or impute it before meta-training")


def checked_loss(loss_fn: LossFn, target: str) -> LossFn:
    """``loss_fn`` with checks on one task's output, target (named ``target``) and loss.

    Rejects a target that silently broadcasts against the output (``(shots,)`` against ``(shots, 1)``),
    class labels stored as floats, and a loss that is not a scalar (``reduction="none"``).
    """
    def loss(output: Tensor, y: Tensor) -> Tensor:
        if y.is_floating_point() and output.shape != y.shape:
            _check_target_shape(output, y, target)
        value = loss_fn(output, y)
        if not isinstance(value, Tensor) or value.dim() != 0:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"loss_fn must return one scalar per task (the mean over its examples), got {shape}; "
                             "use reduction='mean' (not 'none')")
        return value
    return loss


def _check_target_shape(output: Tensor, y: Tensor, target: str) -> None:
    out, want = tuple(output.shape), tuple(y.shape)
    if out[:-1] == want and out[-1] == 1:
        raise ValueError(f"{target} has per-task shape {want} but the model outputs {out}; the loss would broadcast "
                         f"them into a wrong value: give {target} a trailing dimension ({target}[..., None], "
                         "shape (tasks, shots, 1))")
    if out[:-1] == want:
        raise ValueError(f"{target} holds floats ({y.dtype}) of per-task shape {want} against scores of shape {out}: "
                         f"class labels must be int64 class indices ({target}.long())")
    try:
        both = tuple(torch.broadcast_shapes(output.shape, y.shape))
    except RuntimeError:
        return  # the loss itself reports shapes that do not broadcast
    if both not in (out, want):
        raise ValueError(f"{target} has per-task shape {want} but the model outputs {out}; they would broadcast to "
                         f"{both}, a wrong loss: give {target} the output's shape")


__all__ = ["EXECUTIONS", "check_finite_inner", "checked_loss"]
