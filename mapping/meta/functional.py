"""The functional inner loop shared by every optimization-based method.

Parameters are a ``dict[str, Tensor]`` (``dict(model.named_parameters())``); a model becomes a pure
function ``forward(params, x)`` with :func:`torch.func.functional_call`. One task's inner loop is
plain Python over ``steps``; :func:`torch.func.grad` keeps every inner gradient differentiable, so
``loss.backward()`` on the query loss yields MAML's second-order meta-gradient (Finn et al. 2017, eq. 1
and Algorithm 1, lines 6-8).

The tasks of a :class:`~mapping.data.TaskBatch` run in one of three ways (``execution``):

* ``"vmap"``: :func:`torch.func.vmap` over all tasks at once (memory grows with the tasks; fastest for
  tiny models, where per-call overhead dominates).
* ``"chunk"`` (the default): ``vmap`` over chunks of ``chunk_size`` tasks, one after another (bounded memory;
  on a CPU also faster than ``"vmap"`` for a 512-unit MLP or Conv-4, ``benchmarks/meta_execution.py``).
* ``"loop"``: a Python loop over tasks with :func:`torch.autograd.grad`, for modules ``vmap`` cannot run
  (batch norm updating running statistics task by task, as learn2learn does; data-dependent control flow).

Under ``vmap`` the normalisation kernels that torch differentiates wrongly there are routed to
primitive-op versions (:mod:`mapping.nn.norms`), so every execution gives the same meta-gradient.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, vmap
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from ..nn.norms import check_vmappable, primitive_norms
from .checks import (check_alpha, check_data, check_execution, check_finite_inner, check_steps,
                     checked_loss)
from .recompute import check_checkpoint, recomputed

Params = dict[str, Tensor]
Forward = Callable[[Params, Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]
Alpha = float | Mapping[str, Tensor]
# From benchmarks/meta_execution.py (results/benchmark_meta_execution.json, 2-core CPU): chunks of 8 tasks take
# 0.65-0.88x of vmap's time and a third to a quarter of its memory for a 512-unit MLP and Conv-4 on 5-way 1-shot;
# vmap is 3.3-3.5x faster only for a tiny model (the 1-40-40-1 sinusoid MLP), which should ask for it.
DEFAULT_EXECUTION = "chunk"
DEFAULT_CHUNK = 8


def params_of(model: nn.Module) -> Params:
    """The model's parameters as a name -> tensor dict (the tensors themselves, not copies)."""
    return dict(model.named_parameters())


def functional(model: nn.Module) -> Forward:
    """``forward(params, x)``: the model as a pure function of its parameters (buffers as stored).

    The returned function keeps the model as ``forward.module``, so that the methods can check it.
    """
    shapes = {k: p.shape for k, p in model.named_parameters()}

    def forward(params: Params, x: Tensor) -> Tensor:
        if params.keys() != shapes.keys():
            missing, extra = sorted(shapes.keys() - params.keys()), sorted(params.keys() - shapes.keys())
            raise ValueError(f"params does not fit the model: missing {missing}, unexpected {extra}")
        for k, shape in shapes.items():
            if params[k].shape != shape:
                raise ValueError(f"params[{k!r}] has shape {tuple(params[k].shape)}, the model expects {tuple(shape)}")
        return functional_call(model, params, (x,))
    forward.module = model
    return forward


def _rates(alpha: Alpha, keys: Sequence[str]) -> Mapping[str, Tensor | float]:
    return alpha if isinstance(alpha, Mapping) else {k: alpha for k in keys}


def _autograd_grad_and_value(loss: Callable[[Params], Tensor], create: bool
                             ) -> Callable[[Params], tuple[Params, Tensor]]:
    """``torch.func.grad_and_value(loss)`` done with :func:`torch.autograd.grad` (buffers may change in place).

    The graph of the gradient is kept only with ``create``; a parameter the loss does not use gets a zero gradient.
    """
    def run(fast: Params) -> tuple[Params, Tensor]:
        with torch.enable_grad():
            leaves = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in fast.items()}
            value = loss(leaves)
            grads = torch.autograd.grad(value, list(leaves.values()), create_graph=create, allow_unused=True)
        g = {k: torch.zeros_like(fast[k]) if gk is None else gk for k, gk in zip(fast, grads)}
        return g, value if create else value.detach()
    return run


def inner_loop(forward: Forward, loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, *, steps: int,
               alpha: Alpha, first_order: bool = False, adapt: Sequence[str] | None = None,
               query: tuple[Tensor, Tensor] | None = None, trace: bool = False,
               autograd: bool = False, checkpoint: bool = False) -> tuple[Params, Tensor, Tensor]:
    """Adapt ``params`` to one task by ``steps`` steps of gradient descent on ``loss_fn(forward(., x), y)``.

    theta'_j = theta'_{j-1} - alpha * grad L_support(theta'_{j-1}),  theta'_0 = theta   (MAML eq. 1)

    ``alpha`` may be a dict of tensors (Meta-SGD: ``theta' = theta - alpha o grad``). Only the names in
    ``adapt`` move (ANIL adapts the head); the others are used as they are. With ``first_order`` the inner
    gradients are treated as constants (FOMAML). Returns the adapted parameters, the support losses before
    each step ``(steps,)`` (detached: without them first-order MAML's memory would grow with the steps) and,
    if ``query`` is given, the query loss after the last step ``(1,)``, or with ``trace`` after 0..steps steps
    ``(steps + 1,)``. The inner gradients come from :func:`torch.func.grad`,
    or with ``autograd`` from :func:`torch.autograd.grad` (the ``"loop"`` execution: modules may update
    buffers in place; the inner graph is kept when grad mode is on and ``first_order`` is off).

    With ``checkpoint`` (gradient checkpointing, Chen et al. 2016) each inner step keeps only its inputs
    (the fast weights, the support set and the meta-parameters it reads) instead of its graph (the support
    forward's activations and the inner backward); the backward of the meta-loss runs each step again, so the
    meta-gradient is the same, memory holds one step's graph instead of ``steps`` of them, and the inner
    loop's forward and inner gradient are computed twice. With ``autograd`` that is
    :func:`torch.utils.checkpoint.checkpoint` (``use_reentrant=False``), else :func:`~mapping.meta.recompute.
    recomputed` (``torch.utils.checkpoint`` does not run under :func:`torch.func.grad`). The query loss's
    graph is kept as usual. The step runs twice, so the module must not update buffers in it.
    """
    keys = list(params) if adapt is None else list(adapt)
    frozen = {k: v for k, v in params.items() if k not in keys}
    support_fn, query_fn = checked_loss(loss_fn, "support_y"), checked_loss(loss_fn, "query_y")

    def query_loss(fast: Params) -> Tensor:
        return query_fn(forward({**frozen, **fast}, query[0]), query[1])

    create = torch.is_grad_enabled() and not first_order

    def descend(fast: Params, frozen: Params, rate: Mapping, x: Tensor, y: Tensor) -> tuple[Params, Tensor]:
        def support_loss(f: Params) -> Tensor:
            return support_fn(forward({**frozen, **f}, x), y)
        g, loss = (_autograd_grad_and_value(support_loss, create) if autograd else grad_and_value(support_loss))(fast)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        # the support loss is returned for checks and logs only: detached, it keeps no step's forward graph alive
        return {k: fast[k] - rate[k] * g[k] for k in keys}, loss.detach()

    step = (descend if not (checkpoint and torch.is_grad_enabled()) else
            partial(torch_checkpoint, descend, use_reentrant=False) if autograd else partial(recomputed, descend))
    fast, rate = {k: params[k] for k in keys}, dict(_rates(alpha, keys))
    inner, outer = [], []
    for _ in range(steps):
        if query is not None and trace:
            outer.append(query_loss(fast))
        fast, loss = step(fast, frozen, rate, x, y)
        inner.append(loss)
    if query is not None:
        outer.append(query_loss(fast))
    empty = x.new_zeros(0)
    return ({**frozen, **fast}, torch.stack(inner) if inner else empty,
            torch.stack(outer) if outer else empty)


def _stack(results: list[tuple[Params, Tensor, Tensor]], dim_new: bool) -> tuple[Params, Tensor, Tensor]:
    """Join per-task (``dim_new``: stack) or per-chunk (concatenate) results along the tasks dimension."""
    join = torch.stack if dim_new else torch.cat
    fast = {k: join([r[0][k] for r in results]) for k in results[0][0]}
    return fast, join([r[1] for r in results]), join([r[2] for r in results])


def validate_inner(forward: Forward, params: Params, support_x: Tensor, support_y: Tensor,
                   query_x: Tensor | None, query_y: Tensor | None, *, steps: int, alpha: Alpha,
                   adapt: Sequence[str] | None, execution: str, chunk_size: int, checkpoint: bool = False) -> None:
    """Every argument check of :func:`batched_inner_loop`, raising ``ValueError`` / ``FloatingPointError``."""
    check_steps(steps)
    check_checkpoint(checkpoint, getattr(forward, "module", None), execution)
    check_alpha(alpha, params)
    check_execution(execution, chunk_size)
    if adapt is not None:
        unknown = sorted(set(adapt) - params.keys())
        if unknown:
            raise ValueError(f"adapt names parameters that params does not have: {unknown}")
    data = {"support_x": support_x, "support_y": support_y}
    if query_x is not None:
        data.update(query_x=query_x, query_y=query_y)
    module = getattr(forward, "module", None)
    check_data(params, data, module)
    if module is not None and execution != "loop":
        check_vmappable(module)


def batched_inner_loop(forward: Forward, loss_fn: LossFn, params: Params, support_x: Tensor, support_y: Tensor,
                       query_x: Tensor | None = None, query_y: Tensor | None = None, *, steps: int, alpha: Alpha,
                       first_order: bool = False, adapt: Sequence[str] | None = None, trace: bool = False,
                       execution: str = DEFAULT_EXECUTION, chunk_size: int = DEFAULT_CHUNK,
                       validate: bool = True, checkpoint: bool = False) -> tuple[Params, Tensor, Tensor]:
    """:func:`inner_loop` over tasks: x, y of shape ``(tasks, shots, ...)``, run as ``execution`` says.

    Returns adapted parameters with a leading ``tasks`` dimension, support losses ``(tasks, steps)`` and
    query losses ``(tasks, 1)`` after the last step, or with ``trace`` ``(tasks, steps + 1)`` after 0..steps
    steps (empty if no query is given). Every execution keeps the whole graph; :func:`maml_loss` bounds
    memory for ``"chunk"`` and ``"loop"`` by taking one backward per chunk. ``validate=False`` skips
    :func:`validate_inner` (for a caller that checked the whole batch already). ``checkpoint``: see
    :func:`inner_loop`; it works under every execution and drops each inner step's graph (activations of the
    support forward and of the inner backward, for every task of the batch or chunk) for one recomputation of
    the step in the backward.
    """
    has_query = query_x is not None
    qx, qy = (query_x, query_y) if has_query else (support_x, support_y)
    if validate:
        validate_inner(forward, params, support_x, support_y, query_x, query_y, steps=steps, alpha=alpha,
                       adapt=adapt, execution=execution, chunk_size=chunk_size, checkpoint=checkpoint)
    kw = dict(steps=steps, alpha=alpha, first_order=first_order, adapt=adapt, trace=trace, checkpoint=checkpoint)

    if execution == "loop":
        return _stack([inner_loop(forward, loss_fn, params, support_x[t], support_y[t], autograd=True,
                                  query=(qx[t], qy[t]) if has_query else None, **kw)
                       for t in range(support_x.shape[0])], dim_new=True)

    def one_task(sx: Tensor, sy: Tensor, qx_: Tensor, qy_: Tensor) -> tuple[Params, Tensor, Tensor]:
        return inner_loop(forward, loss_fn, params, sx, sy, query=(qx_, qy_) if has_query else None, **kw)

    tasks = support_x.shape[0]
    size = tasks if execution == "vmap" else chunk_size
    with primitive_norms():
        results = [vmap(one_task)(support_x[s:s + size], support_y[s:s + size], qx[s:s + size], qy[s:s + size])
                   for s in range(0, tasks, size)]
    return results[0] if len(results) == 1 else _stack(results, dim_new=False)


@torch.no_grad()
def adaptation_curve(forward: Forward, loss_fn: LossFn, params: Params, support_x: Tensor, support_y: Tensor,
                     query_x: Tensor, query_y: Tensor, *, steps: int, alpha: Alpha,
                     adapt: Sequence[str] | None = None, check: bool = True, execution: str = DEFAULT_EXECUTION,
                     chunk_size: int = DEFAULT_CHUNK) -> Tensor:
    """Query loss of every task after 0..steps inner SGD steps on its support set: ``(tasks, steps + 1)``.

    The evaluation protocol of Finn et al. 2017 (§5.1): fine-tune on the K support points, measure on the query.
    With ``check=False`` a diverging task yields non-finite losses instead of an error.
    """
    params = {k: v.detach() for k, v in params.items()}
    if isinstance(alpha, Mapping):
        alpha = {k: v.detach() for k, v in alpha.items()}
    _, inner, outer = batched_inner_loop(forward, loss_fn, params, support_x, support_y, query_x, query_y,
                                         steps=steps, alpha=alpha, first_order=True, adapt=adapt, trace=True,
                                         execution=execution, chunk_size=chunk_size)
    if check:
        check_finite_inner(inner)
    return outer  # (tasks, steps + 1)


__all__ = ["DEFAULT_CHUNK", "DEFAULT_EXECUTION", "adaptation_curve", "batched_inner_loop", "functional",
           "inner_loop", "params_of", "validate_inner"]
