"""Reptile (Nichol, Achiam & Schulman 2018, Algorithm 1/2).

For each task, run ``k`` steps of SGD from ``theta`` to get ``theta'_i``, then move towards them:

    theta <- theta + beta * mean_i(theta'_i - theta)                                       (Reptile, Alg. 2)

The article's §3.2.2 writes ``g = mean(theta - theta'_i)`` and ``theta <- theta + beta g``, which moves *away*
from the adapted weights (erratum 1 in the book); :func:`article_reptile_update` keeps that form only so the
book can show it diverge. :meth:`Reptile.meta_loss`'s backward stores ``theta - mean theta'`` in ``.grad`` so that any
``torch.optim`` optimizer takes the step (plain SGD with ``lr=beta`` reproduces the update above exactly).

The inner loop is plain SGD (``inner="sgd"``, the algorithm as written) or Adam (``inner="adam"``, Kingma & Ba
2015, Algorithm 1, with ``beta1 = 0`` as in Reptile's own Omniglot and Mini-ImageNet runs, §6 and Appendix A),
started with zero moments for every task (Reptile's code keeps Adam's second moments from task to task, an
implementation detail not reproduced here).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from torch.func import grad_and_value, vmap

from ..data.tasks import TaskBatch
from ..nn.norms import primitive_norms
from .checks import check_finite_inner
from .compiled import CompiledFn, compiled_meta_loss, sgd_adapted
from .functional import (DEFAULT_CHUNK, DEFAULT_EXECUTION, Alpha, Forward, LossFn, Params, _autograd_grad_and_value,
                         batched_inner_loop, validate_inner)
from .chunked import Precomputed
from .maml import MetaLearner, resolve_alpha

INNER = ("sgd", "adam")


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


def adam_adapted_params(forward: Forward, loss_fn: LossFn, params: Params, x: Tensor, y: Tensor, *, steps: int,
                        lr: float, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8,
                        execution: str = DEFAULT_EXECUTION, chunk_size: int = DEFAULT_CHUNK) -> tuple[Params, Tensor]:
    """``theta'_i`` for every task after ``steps`` Adam steps (Kingma & Ba 2015, Algorithm 1, zero moments at the
    start of each task) on ``(x, y)`` of shape ``(tasks, shots, ...)``: ``m <- b1 m + (1 - b1) g``,
    ``v <- b2 v + (1 - b2) g^2``, ``theta' <- theta' - lr m_hat / (sqrt(v_hat) + eps)``. No graph is kept.
    Returns ``{name: (tasks, *shape)}`` and the inner losses ``(tasks, steps)``."""
    validate_inner(forward, params, x, y, None, None, steps=steps, alpha=lr, adapt=None, execution=execution,
                   chunk_size=chunk_size)
    b1, b2 = betas
    detached = {k: v.detach() for k, v in params.items()}

    def one_task(xt: Tensor, yt: Tensor, grad_value) -> tuple[Params, Tensor]:
        fast = dict(detached)
        m = {k: torch.zeros_like(v) for k, v in fast.items()}
        v2 = {k: torch.zeros_like(v) for k, v in fast.items()}
        losses = []
        for t in range(1, steps + 1):
            g, loss = grad_value(lambda p: loss_fn(forward(p, xt), yt))(fast)
            m = {k: b1 * m[k] + (1 - b1) * g[k] for k in fast}
            v2 = {k: b2 * v2[k] + (1 - b2) * g[k] ** 2 for k in fast}
            fast = {k: fast[k] - lr * (m[k] / (1 - b1 ** t)) / ((v2[k] / (1 - b2 ** t)).sqrt() + eps) for k in fast}
            losses.append(loss.detach())
        return fast, torch.stack(losses) if losses else xt.new_zeros(0)

    if execution == "loop":
        parts = [one_task(x[t], y[t], lambda f: _autograd_grad_and_value(f, create=False))
                 for t in range(x.shape[0])]
        fast = {k: torch.stack([p[0][k] for p in parts]) for k in detached}
        inner = torch.stack([p[1] for p in parts])
    else:
        size = x.shape[0] if execution == "vmap" else chunk_size
        with primitive_norms(), torch.no_grad():
            parts = [vmap(lambda a, b: one_task(a, b, grad_and_value))(x[s:s + size], y[s:s + size])
                     for s in range(0, x.shape[0], size)]
        fast = {k: torch.cat([p[0][k] for p in parts]) for k in detached}
        inner = torch.cat([p[1] for p in parts])
    check_finite_inner(inner)
    return fast, inner  # {name: (tasks, *shape)}, (tasks, steps)


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

    >>> import torch, torch.nn.functional as F
    >>> from mapping.data import Sinusoid
    >>> from mapping.nn import sinusoid_mlp
    >>> net = sinusoid_mlp(40)
    >>> reptile = Reptile(net, alpha=0.01, steps=5,
    ...                   loss_fn=F.mse_loss)
    >>> params = reptile.parameters()
    >>> outer = torch.optim.SGD(params, lr=0.1)  # lr: beta
    >>> g = torch.Generator().manual_seed(0)
    >>> batch = Sinusoid.maml().sample(4, 5, 5, g)
    >>> outer.zero_grad()
    >>> reptile.meta_loss(batch).backward()
    >>> outer.step()
    >>> reptile.diagnostics["inner_losses"].shape
    torch.Size([4, 5])

    :meth:`meta_loss` follows :mod:`mapping.meta.protocol`: its backward leaves ``theta - mean_i theta'_i`` in
    ``.grad``, so SGD with ``lr=beta`` takes Reptile's step. ``alpha`` defaults to 0.01 (``lr=`` is
    learn2learn's name for it); ``execution`` and ``chunk_size`` as for :class:`~mapping.meta.MAML`; ``clone``
    (first-order: Reptile has no Hessian term) comes from :class:`~mapping.meta.MetaLearner` and adapts by SGD
    steps whatever ``inner`` is; :meth:`adapted`, :meth:`predict` and :meth:`adaptation_curve` use the inner
    optimizer (``inner="adam"``: Adam with ``betas``). ``use_query`` trains the inner loop on support and
    query together (Reptile has no query set).
    """

    first_order = True

    def __init__(self, module: nn.Module, alpha: float | None = None, steps: int = 5, *, lr: float | None = None,
                 use_query: bool = True, inner: str = "sgd", betas: tuple[float, float] = (0.0, 0.999),
                 loss_fn: LossFn | None = None, execution: str = DEFAULT_EXECUTION, chunk_size: int = DEFAULT_CHUNK,
                 compile: bool | Mapping = False) -> None:
        super().__init__(module, resolve_alpha(alpha, lr, 0.01), steps, loss_fn=loss_fn, execution=execution,
                         chunk_size=chunk_size)
        options = compiled_meta_loss(compile, execution)
        if options is not None and inner != "sgd":
            raise ValueError("compile=True applies to inner='sgd'; inner='adam' runs eagerly")
        self.compiled = options  # its options, and the compiled inner loops (steps_fns), as for MAML
        if inner not in INNER:
            raise ValueError(f"inner must be one of {INNER} (the inner loop's optimizer), got {inner!r}")
        if (not isinstance(betas, (tuple, list)) or len(betas) != 2
                or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be two numbers in [0, 1) (Adam's beta1, beta2), got {betas!r}")
        if not isinstance(use_query, bool):
            raise ValueError(f"use_query must be True or False, got {use_query!r}")
        self.use_query, self.inner, self.betas = use_query, inner, tuple(betas)
        self.options = dict(alpha=self.inner_alpha, steps=steps, use_query=use_query, inner=inner, betas=self.betas,
                            loss_fn=loss_fn, execution=execution, chunk_size=chunk_size, compile=compile)

    def adapted(self, support_x: Tensor, support_y: Tensor, loss_fn: LossFn | None = None,
                steps: int | None = None, *, alpha: float | None = None) -> tuple[Params, Tensor]:
        """The adapted weights of every task, ``{name: (tasks, *shape)}``, after ``steps`` (default ``self.steps``)
        inner steps of the inner optimizer (rate ``alpha``, default the learner's) on ``loss_fn`` of
        ``support_x, support_y`` (``(tasks, shots, ...)``), and the inner losses ``(tasks, steps)``. Raises
        ``FloatingPointError`` naming a diverged task."""
        steps, loss_fn = self.steps if steps is None else steps, self.resolve_loss(loss_fn)
        alpha = self.inner_alpha if alpha is None else alpha
        x, y = support_x, support_y
        if self.compiled is not None:
            return self._compiled_adapted(x, y, loss_fn, steps, alpha)
        kw = dict(steps=steps, execution=self.execution, chunk_size=self.chunk_size)
        if self.inner == "adam":
            return adam_adapted_params(self._forward, loss_fn, self.params(), x, y, lr=alpha, betas=self.betas,
                                       **kw)
        return adapted_params(self._forward, loss_fn, self.params(), x, y, alpha=alpha, **kw)

    def _compiled_adapted(self, x: Tensor, y: Tensor, loss_fn: LossFn, steps: int,
                          alpha: float) -> tuple[Params, Tensor]:
        """:meth:`adapted` through one compiled function per ``(loss_fn, steps)`` (:mod:`mapping.meta.compiled`)."""
        params = {k: v.detach() for k, v in self.params().items()}
        validate_inner(self._forward, params, x, y, None, None, steps=steps, alpha=alpha, adapt=None,
                       execution=self.execution, chunk_size=self.chunk_size)
        key = (loss_fn, steps, alpha)
        fns = self.compiled.steps_fns
        if key not in fns:
            fns[key] = CompiledFn(sgd_adapted(self._forward, loss_fn, steps=steps, alpha=alpha),
                                  **self.compiled.options)
        size = x.shape[0] if self.execution == "vmap" else self.chunk_size
        parts = [fns[key](params, x[s:s + size], y[s:s + size]) for s in range(0, x.shape[0], size)]
        fast = {k: torch.cat([p[0][k] for p in parts]) for k in params}  # {name: (tasks, *shape)}
        inner = torch.cat([p[1] for p in parts])  # (tasks, steps)
        check_finite_inner(inner)
        return fast, inner

    def adaptation_curve(self, batch: TaskBatch, loss_fn: LossFn | None = None, steps: int | None = None,
                         alpha: Alpha | None = None, check: bool = True) -> Tensor:
        """Query loss of each task after 0..steps inner steps, ``(tasks, steps + 1)``, with the inner optimizer."""
        if self.inner == "sgd":
            return super().adaptation_curve(batch, loss_fn, steps, alpha, check)
        loss_fn, steps = self.resolve_loss(loss_fn), self.steps if steps is None else steps
        forward = vmap(lambda p, x: self._forward(p, x))
        curve = []
        for s in range(steps + 1):
            fast, _ = self.adapted(batch.support_x, batch.support_y, loss_fn, s)
            with torch.no_grad(), primitive_norms():
                out = forward(fast, batch.query_x)  # (tasks, q, ...)
                curve.append(vmap(loss_fn)(out, batch.query_y))  # (tasks,)
        return torch.stack(curve, 1)  # (tasks, steps + 1)

    def meta_loss(self, batch: TaskBatch, loss_fn: LossFn | None = None) -> Tensor:
        """The mean first inner loss (a 0-dim tensor), whose ``backward()`` adds ``theta - mean_i theta'_i`` to
        each parameter's ``.grad`` (Nichol et al. 2018, Algorithm 2, through
        :class:`~mapping.meta.chunked.Precomputed`); the inner losses ``(tasks, steps)`` go to ``self.diagnostics["inner_losses"]``.

        With ``use_query`` the inner loop trains on support and query together (Reptile has no query set).
        """
        if not isinstance(batch, TaskBatch):
            raise ValueError(f"batch must be a mapping.data.TaskBatch, got {type(batch).__name__}")
        x, y = batch.support_x, batch.support_y
        if self.use_query:
            x = torch.cat([x, batch.query_x], 1)  # (tasks, support + query, ...)
            y = torch.cat([y, batch.query_y], 1)
        params = self.params()
        adapted, inner = self.adapted(x, y, loss_fn)
        self.diagnostics = {"inner_losses": inner}
        value = inner[:, 0].mean() if inner.numel() else x.new_zeros(())
        names = [k for k, p in params.items() if p.requires_grad]
        if not torch.is_grad_enabled() or not names:
            return value
        direction = reptile_direction(params, adapted)
        return Precomputed.apply(value, tuple(-direction[k] for k in names), *(params[k] for k in names))


__all__ = ["INNER", "Reptile", "adam_adapted_params", "adapted_params", "article_reptile_update", "reptile_direction", "reptile_update"]
