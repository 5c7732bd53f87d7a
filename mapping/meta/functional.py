"""The functional inner loop shared by every optimization-based method.

Parameters are a ``dict[str, Tensor]`` (``dict(model.named_parameters())``); a model becomes a pure
function ``forward(params, x)`` with :func:`torch.func.functional_call`. One task's inner loop is
plain Python over ``steps``; :func:`torch.func.vmap` batches it over the tasks of a
:class:`~mapping.data.TaskBatch`, and :func:`torch.func.grad` keeps every inner gradient
differentiable, so ``loss.backward()`` on the query loss yields MAML's second-order meta-gradient
(Finn et al. 2017, eq. 1 and Algorithm 1, lines 6-8).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap

Params = dict[str, Tensor]
Forward = Callable[[Params, Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
Alpha = float | Mapping[str, Tensor]


def params_of(model: nn.Module) -> Params:
    """The model's parameters as a name -> tensor dict (the tensors themselves, not copies)."""
    return dict(model.named_parameters())


def functional(model: nn.Module) -> Forward:
    """``forward(params, x)``: the model as a pure function of its parameters (buffers as stored)."""
    shapes = {k: p.shape for k, p in model.named_parameters()}

    def forward(params: Params, x: Tensor) -> Tensor:
        if params.keys() != shapes.keys():
            missing, extra = sorted(shapes.keys() - params.keys()), sorted(params.keys() - shapes.keys())
            raise ValueError(f"params does not fit the model: missing {missing}, unexpected {extra}")
        for k, shape in shapes.items():
            if params[k].shape != shape:
                raise ValueError(f"params[{k!r}] has shape {tuple(params[k].shape)}, the model expects {tuple(shape)}")
        return functional_call(model, params, (x,))
    return forward


def check_alpha(alpha: Alpha, params: Mapping[str, Tensor] | None = None) -> None:
    """``alpha`` is a positive finite float, or (Meta-SGD) a dict of tensors shaped like ``params``."""
    if isinstance(alpha, Mapping):
        if params is not None:
            for k, p in params.items():
                if k in alpha and alpha[k].shape != p.shape:
                    raise ValueError(f"alpha[{k!r}] has shape {tuple(alpha[k].shape)}, expected {tuple(p.shape)}")
        return
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a positive finite float (or a dict of per-parameter rates), got {alpha!r}")


def check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")


def inner_loop(forward: Forward, loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, *, steps: int,
               alpha: Alpha, first_order: bool = False, adapt: Sequence[str] | None = None,
               query: tuple[Tensor, Tensor] | None = None, trace: bool = False) -> tuple[Params, Tensor, Tensor]:
    """Adapt ``params`` to one task by ``steps`` steps of gradient descent on ``loss_fn(forward(., x), y)``.

    theta'_j = theta'_{j-1} - alpha * grad L_support(theta'_{j-1}),  theta'_0 = theta   (MAML eq. 1)

    ``alpha`` may be a dict of tensors (Meta-SGD: ``theta' = theta - alpha o grad``). Only the names in
    ``adapt`` move (ANIL adapts the head); the others are used as they are. With ``first_order`` the inner
    gradients are treated as constants (FOMAML). Returns the adapted parameters, the support losses before
    each step ``(steps,)`` and, if ``query`` is given, the query loss after the last step ``(1,)``, or with
    ``trace`` after 0..steps steps ``(steps + 1,)``.
    """
    keys = list(params) if adapt is None else list(adapt)
    frozen = {k: v for k, v in params.items() if k not in keys}

    def support_loss(fast: Params) -> Tensor:
        return loss_fn(forward({**frozen, **fast}, x), y)

    def query_loss(fast: Params) -> Tensor:
        return loss_fn(forward({**frozen, **fast}, query[0]), query[1])

    fast = {k: params[k] for k in keys}
    inner, outer = [], []
    for _ in range(steps):
        if query is not None and trace:
            outer.append(query_loss(fast))
        g, loss = grad_and_value(support_loss)(fast)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        rate = alpha if isinstance(alpha, Mapping) else {k: alpha for k in keys}
        fast = {k: fast[k] - rate[k] * g[k] for k in keys}
        inner.append(loss)
    if query is not None:
        outer.append(query_loss(fast))
    empty = x.new_zeros(0)
    return ({**frozen, **fast}, torch.stack(inner) if inner else empty,
            torch.stack(outer) if outer else empty)


def check_finite_inner(inner_losses: Tensor) -> None:
    """Raise ``FloatingPointError`` naming the first task and inner step whose support loss is not finite.

    ``inner_losses`` has shape ``(tasks, steps)``; step numbers in the message count from 1.
    """
    bad = ~torch.isfinite(inner_losses.detach())
    if bad.any():
        task, step = (int(i) for i in bad.nonzero()[0])
        value = inner_losses[task, step].item()
        raise FloatingPointError(f"the inner-loop support loss is not finite ({value}) at inner step {step + 1} "
                                 f"of task {task}; lower alpha, check the task's data, or clip the inner gradients")


def batched_inner_loop(forward: Forward, loss_fn: LossFn, params: Params, support_x: Tensor, support_y: Tensor,
                       query_x: Tensor | None = None, query_y: Tensor | None = None, *, steps: int, alpha: Alpha,
                       first_order: bool = False, adapt: Sequence[str] | None = None, trace: bool = False,
                       ) -> tuple[Params, Tensor, Tensor]:
    """:func:`inner_loop` vmapped over tasks: x, y of shape ``(tasks, shots, ...)``.

    Returns adapted parameters with a leading ``tasks`` dimension, support losses ``(tasks, steps)`` and
    query losses ``(tasks, 1)`` after the last step, or with ``trace`` ``(tasks, steps + 1)`` after 0..steps
    steps (empty if no query is given).
    """
    check_steps(steps)
    check_alpha(alpha, params)
    if adapt is not None:
        unknown = sorted(set(adapt) - params.keys())
        if unknown:
            raise ValueError(f"adapt names parameters that params does not have: {unknown}")
    has_query = query_x is not None

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> tuple[Params, Tensor, Tensor]:
        return inner_loop(forward, loss_fn, params, sx, sy, steps=steps, alpha=alpha, first_order=first_order,
                          adapt=adapt, query=(qx, qy) if has_query else None, trace=trace)

    qx = query_x if has_query else support_x
    qy = query_y if has_query else support_y
    return vmap(one_task)(support_x, support_y, qx, qy)


@torch.no_grad()
def adaptation_curve(forward: Forward, loss_fn: LossFn, params: Params, support_x: Tensor, support_y: Tensor,
                     query_x: Tensor, query_y: Tensor, *, steps: int, alpha: Alpha,
                     adapt: Sequence[str] | None = None, check: bool = True) -> Tensor:
    """Query loss of every task after 0..steps inner SGD steps on its support set: ``(tasks, steps + 1)``.

    The evaluation protocol of Finn et al. 2017 (§5.1): fine-tune on the K support points, measure on the query.
    With ``check=False`` a diverging task yields non-finite losses instead of an error.
    """
    params = {k: v.detach() for k, v in params.items()}
    if isinstance(alpha, Mapping):
        alpha = {k: v.detach() for k, v in alpha.items()}
    _, inner, outer = batched_inner_loop(forward, loss_fn, params, support_x, support_y, query_x, query_y,
                                         steps=steps, alpha=alpha, first_order=True, adapt=adapt, trace=True)
    if check:
        check_finite_inner(inner)
    return outer  # (tasks, steps + 1)
