"""MAML and its relatives: first-order MAML, Meta-SGD and ANIL.

* MAML (Finn, Abbeel & Levine 2017): ``min_theta sum_i L_query_i(theta - alpha grad L_support_i(theta))``,
  differentiated through the inner update (Algorithm 1/2); the meta-gradient of one step is
  ``(I - alpha H_support) grad L_query(theta')``.
* First-order MAML (same paper, §5.2): drop the Hessian term, ``grad L_query(theta')``.
* Meta-SGD (Li et al. 2017, eq. 3): ``theta' = theta - alpha o grad L_support(theta)`` with a learned
  per-parameter ``alpha`` meta-trained with ``theta``.
* ANIL (Raghu et al. 2020, §4): the inner loop adapts only the head; the body is meta-learned.

The functional core (:func:`maml_loss`) is vmapped over the tasks of a :class:`~mapping.data.TaskBatch`.
The ``nn.Module`` classes wrap it, and offer learn2learn-style ``clone()`` / ``adapt(loss)`` for one task.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

from torch.func import vmap

from ..data.tasks import TaskBatch
from ..nn.norms import primitive_norms
from .checks import check_alpha, check_execution, check_finite_inner, check_steps
from .chunked import chunked_mean
from .compiled import compiled_meta_loss
from .recompute import check_checkpoint
from .functional import (DEFAULT_CHUNK, DEFAULT_EXECUTION, Alpha, Forward, LossFn, Params, adaptation_curve,
                         batched_inner_loop, functional, params_of, validate_inner)


def maml_loss(forward: Forward, loss_fn: LossFn, params: Params, batch: TaskBatch, *, steps: int = 1,
              alpha: Alpha = 0.01, first_order: bool = False, adapt: Sequence[str] | None = None,
              execution: str = DEFAULT_EXECUTION, chunk_size: int = DEFAULT_CHUNK,
              checkpoint: bool = False) -> tuple[Tensor, Tensor]:
    """Mean query loss after adapting to each task of ``batch`` (Finn et al. 2017, Algorithm 2, line 10).

    ``loss.backward()`` gives the meta-gradient, whatever the ``execution`` (see :mod:`mapping.meta.functional`):
    ``"vmap"`` keeps one graph over all tasks; ``"chunk"`` (``chunk_size`` tasks at a time) and ``"loop"`` (one
    task at a time) take one backward per chunk while the loss is computed (:mod:`mapping.meta.chunked`), so
    their memory does not grow with the tasks. Raises ``FloatingPointError`` naming the task and inner step if
    a support loss is not finite. Returns ``(loss, inner_losses)``, ``inner_losses`` of shape ``(tasks, steps)``.
    ``checkpoint`` recomputes each inner step in the backward instead of storing its graph (same meta-gradient;
    memory of one step's graph instead of ``steps``, for one more inner forward and inner gradient per step;
    :func:`~mapping.meta.functional.inner_loop`), under every execution.
    """
    if not isinstance(batch, TaskBatch):
        raise ValueError(f"batch must be a mapping.data.TaskBatch, got {type(batch).__name__}")
    check_execution(execution, chunk_size)
    kw = dict(steps=steps, alpha=alpha, first_order=first_order, adapt=adapt, checkpoint=checkpoint)
    if execution == "vmap":
        _, inner, outer = batched_inner_loop(forward, loss_fn, params, *batch.tensors(), **kw,
                                             execution="vmap")  # inner: (tasks, steps)
        check_finite_inner(inner)
        return outer[:, -1].mean(), inner
    validate_inner(forward, params, *batch.tensors(), steps=steps, alpha=alpha, adapt=adapt, execution=execution,
                   chunk_size=chunk_size, checkpoint=checkpoint)
    rates = dict(alpha) if isinstance(alpha, Mapping) else {}
    inputs = {**{("params", k): v for k, v in params.items()}, **{("alpha", k): v for k, v in rates.items()}}

    def run(leaves: dict, start: int, stop: int) -> tuple[Tensor, Tensor]:
        p = {k: leaves["params", k] for k in params}
        a = {k: leaves["alpha", k] for k in rates} if rates else alpha
        part = (t[start:stop] for t in batch.tensors())
        _, inner, outer = batched_inner_loop(forward, loss_fn, p, *part, **{**kw, "alpha": a}, validate=False,
                                             execution="vmap" if execution == "chunk" else "loop")
        return outer[:, -1].sum(), inner  # (), (chunk, steps)
    return chunked_mean(run, inputs, batch.num_tasks, chunk_size if execution == "chunk" else 1)


def _connected_copies(params: Params) -> Params:
    """New tensors, differentiable back to ``params`` (learn2learn's ``clone``); frozen ones are shared."""
    return {k: v.clone() if v.requires_grad else v for k, v in params.items()}


class Learner(nn.Module):
    """One task's adapted copy of a model (learn2learn's ``clone()``): parameters stay connected to the
    original ones, so the query loss of the adapted learner back-propagates into the meta-parameters.

    ``parameters()`` and ``named_parameters()`` yield the adapted tensors (differentiable copies of the
    originals, so a loss computed with the meta-model instead is caught); ``clone()`` starts a nested learner
    from them. ``allow_unused`` lets a step leave parameters the loss does not use unchanged; ``allow_nograd``
    keeps parameters with ``requires_grad=False`` fixed instead of raising (learn2learn's options).
    """

    def __init__(self, module: nn.Module, params: Params, alpha: Alpha, first_order: bool,
                 adapt: Sequence[str] | None, allow_unused: bool = False, allow_nograd: bool = False) -> None:
        super().__init__()
        self.module = module
        self.params = dict(params)
        self.alpha, self.first_order = alpha, first_order
        self.adapt_names = list(params) if adapt is None else list(adapt)
        self.allow_unused, self.allow_nograd = allow_unused, allow_nograd
        self.steps_taken = 0
        self._forward = functional(module)

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(self.params, x)

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
        for k, v in self.params.items():
            yield (f"{prefix}.{k}" if prefix else k), v

    def parameters(self, recurse: bool = True) -> Iterator[Tensor]:
        for _, v in self.named_parameters():
            yield v

    def clone(self, first_order: bool | None = None) -> "Learner":
        """A nested learner starting from this one's adapted parameters (still connected to the originals)."""
        first = self.first_order if first_order is None else first_order
        child = Learner(self.module, _connected_copies(self.params), self.alpha, first, self.adapt_names,
                        self.allow_unused, self.allow_nograd)
        child.steps_taken = self.steps_taken
        return child

    def _movable(self, allow_nograd: bool) -> list[str]:
        fixed = [k for k in self.adapt_names if not self.params[k].requires_grad]
        if fixed and not allow_nograd:
            raise ValueError(f"parameters {fixed} do not require grad, so adapt() cannot differentiate the loss with "
                             "respect to them; pass allow_nograd=True to keep them fixed during adaptation")
        return [k for k in self.adapt_names if k not in fixed]

    def adapt(self, loss: Tensor, first_order: bool | None = None, allow_unused: bool | None = None,
              allow_nograd: bool | None = None) -> "Learner":
        """One inner step ``theta' <- theta' - alpha grad loss`` in place; returns ``self``."""
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError(f"loss must be a scalar tensor, got {getattr(loss, 'shape', type(loss).__name__)}")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the support loss is not finite ({loss.item()}) at inner step "
                                     f"{self.steps_taken + 1}; lower alpha or check the task's data")
        first = self.first_order if first_order is None else first_order
        unused_ok = self.allow_unused if allow_unused is None else allow_unused
        names = self._movable(self.allow_nograd if allow_nograd is None else allow_nograd)
        tensors = [self.params[k] for k in names]
        grads = torch.autograd.grad(loss, tensors, create_graph=not first, allow_unused=True) if (
            loss.requires_grad and tensors) else [None] * len(names)
        unused = [k for k, g in zip(names, grads) if g is None]
        if names and len(unused) == len(names):
            raise ValueError("loss does not depend on this learner's parameters: compute it with the learner "
                             "(learner(x)), not with the meta-model (maml(x) or maml.module(x))")
        if unused and not unused_ok:
            raise ValueError(f"loss does not depend on parameters {unused}; pass allow_unused=True to leave them "
                             "unchanged in this step")
        rates = self.alpha if isinstance(self.alpha, Mapping) else {k: self.alpha for k in names}
        for k, g in zip(names, grads):
            if g is not None:
                self.params[k] = self.params[k] - rates[k] * (g.detach() if first else g)
        self.steps_taken += 1
        return self


def resolve_alpha(alpha: float | None, lr: float | None, default: float) -> float:
    """``alpha``, or learn2learn's name for it, ``lr``; the default when neither is given."""
    if alpha is not None and lr is not None:
        raise ValueError(f"alpha and lr name the same inner learning rate; pass one, got alpha={alpha!r} "
                         f"and lr={lr!r}")
    return default if alpha is None and lr is None else (lr if alpha is None else alpha)


class MetaLearner(nn.Module):
    """What every optimization-based method shares (the protocol of :mod:`mapping.meta.protocol`): the wrapped
    module as a pure function of its parameters (:meth:`functional_call`), the inner rate ``alpha`` and
    ``steps``, the default ``loss_fn``, the ``execution`` of a task batch, :meth:`adapted` and :meth:`predict`
    for new tasks, ``clone()`` for one task and :meth:`adaptation_curve`. Each method (MAML's family, Reptile)
    gives ``meta_loss``."""

    first_order, adapt_names, allow_unused, allow_nograd = False, None, False, False

    def __init__(self, module: nn.Module, alpha: float, steps: int, *, loss_fn: LossFn | None = None,
                 execution: str = DEFAULT_EXECUTION, chunk_size: int = DEFAULT_CHUNK) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        check_alpha(alpha)
        check_steps(steps)
        check_execution(execution, chunk_size)
        if loss_fn is not None and not callable(loss_fn):
            raise ValueError(f"loss_fn must be a callable loss_fn(output, target), got {type(loss_fn).__name__}")
        self.module, self.loss_fn = module, loss_fn
        self.inner_alpha, self.steps = float(alpha), steps
        self.execution, self.chunk_size = execution, chunk_size
        self.diagnostics: dict[str, Tensor] = {}
        self._forward = functional(module)

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    @property
    def alpha(self) -> Alpha:
        """The inner learning rate: a float, or per-parameter tensors for Meta-SGD."""
        return self.inner_alpha

    def params(self) -> Params:
        return params_of(self.module)

    def functional_call(self, params: Params, x: Tensor) -> Tensor:
        """The wrapped module with ``params`` (one task's, ``{name: tensor}``) in place of its own, on ``x``."""
        return self._forward(params, x)

    def resolve_loss(self, loss_fn: LossFn | None) -> LossFn:
        """``loss_fn``, else the constructor's; raises ``ValueError`` when neither was given."""
        loss_fn = self.loss_fn if loss_fn is None else loss_fn
        if loss_fn is None:
            raise ValueError(f"loss_fn must be given, to {type(self).__name__}(..., loss_fn=...) or to the call "
                             "(e.g. torch.nn.functional.cross_entropy)")
        return loss_fn

    def adaptation_curve(self, batch: TaskBatch, loss_fn: LossFn | None = None, steps: int | None = None,
                         alpha: Alpha | None = None, check: bool = True) -> Tensor:
        """Query loss of each task after 0..steps inner steps, ``(tasks, steps + 1)``, without meta-gradients."""
        return adaptation_curve(self._forward, self.resolve_loss(loss_fn), self.params(), *batch.tensors(),
                                steps=self.steps if steps is None else steps,
                                alpha=self.alpha if alpha is None else alpha, adapt=self.adapt_names, check=check,
                                execution=self.execution, chunk_size=self.chunk_size)

    def adapted(self, support_x: Tensor, support_y: Tensor, loss_fn: LossFn | None = None,
                steps: int | None = None, *, alpha: Alpha | None = None) -> tuple[Params, Tensor]:
        """Each task's parameters after ``steps`` (default ``self.steps``) inner SGD steps (rate ``alpha``,
        default the learner's) on its support set, ``{name: (tasks, *shape)}``, and the inner losses
        ``(tasks, steps)``; detached, nothing is kept for a meta-gradient. A diverging task gives non-finite
        entries, not an error."""
        alpha = self.alpha if alpha is None else alpha
        alpha = {k: v.detach() for k, v in alpha.items()} if isinstance(alpha, Mapping) else alpha
        params = {k: v.detach() for k, v in self.params().items()}
        with torch.enable_grad():  # the inner gradients; nothing is kept
            fast, inner, _ = batched_inner_loop(self._forward, self.resolve_loss(loss_fn), params, support_x,
                                                support_y, steps=self.steps if steps is None else steps,
                                                alpha=alpha, first_order=True, adapt=self.adapt_names,
                                                execution=self.execution, chunk_size=self.chunk_size)
        return {k: v.detach() for k, v in fast.items()}, inner.detach()

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, loss_fn: LossFn | None = None,
                steps: int | None = None) -> Tensor:
        """The outputs for each task's queries ``(tasks, q, ...)`` after :meth:`adapted` on its support set."""
        fast, _ = self.adapted(support_x, support_y, loss_fn, steps)  # {name: (tasks, *shape)}
        with torch.no_grad(), primitive_norms():
            return vmap(self._forward)(fast, query_x)  # (tasks, q, ...)

    def with_module(self, module: nn.Module) -> "MetaLearner":
        """The same method, with the same settings (``self.options``, the constructor's keywords), around another
        module: e.g. a wider head for more classes. Its learned tensors of its own (Meta-SGD's rates) start
        afresh; copy them with ``load_state_dict`` where the shapes allow."""
        return type(self)(module, **self.options)

    def clone(self, first_order: bool | None = None) -> Learner:
        """A :class:`Learner` for one task, differentiable back to this module's parameters."""
        first = self.first_order if first_order is None else first_order
        return Learner(self.module, _connected_copies(self.params()), self.alpha, first, self.adapt_names,
                       self.allow_unused, self.allow_nograd)


class MAML(MetaLearner):
    """MAML around any ``nn.Module`` (learn2learn: ``l2l.algorithms.MAML(model, lr, first_order)``).

    >>> import torch, torch.nn.functional as F
    >>> from mapping.data import Sinusoid
    >>> from mapping.nn import sinusoid_mlp
    >>> net = sinusoid_mlp(40)
    >>> maml = MAML(net, alpha=0.01, loss_fn=F.mse_loss)
    >>> g = torch.Generator().manual_seed(0)
    >>> batch = Sinusoid.maml().sample(4, 5, 5, g)  # 4 tasks
    >>> loss = maml.meta_loss(batch)  # vmapped over tasks
    >>> loss.backward()  # the meta-gradient, in .grad
    >>> x_s, y_s = batch.support_x, batch.support_y
    >>> x_q = batch.query_x
    >>> maml.predict(x_s, y_s, x_q).shape  # after 1 step
    torch.Size([4, 5, 1])
    >>> learner = maml.clone()  # one task, as learn2learn
    >>> loss_s = F.mse_loss(learner(x_s[0]), y_s[0])
    >>> learner = learner.adapt(loss_s)
    >>> learner(x_q[0]).shape
    torch.Size([5, 1])

    ``alpha`` defaults to 0.01 (``lr=`` is learn2learn's name for it). ``execution`` (``"vmap"``, ``"chunk"``
    with ``chunk_size``, or ``"loop"``) says how the tasks of a batch run; every execution gives the same loss
    and meta-gradient (see :func:`maml_loss`). ``compile=True`` (or a dict of :func:`torch.compile` options)
    compiles the meta-step of ``"vmap"`` and ``"chunk"`` (:mod:`mapping.meta.compiled`); the loss can then not
    be differentiated twice. ``checkpoint=True`` recomputes each inner step in the backward instead of storing
    its graph (:func:`maml_loss`); not with ``compile``. ``adapt`` names the parameters the inner loop moves
    (default: all).
    """

    def __init__(self, module: nn.Module, alpha: float | None = None, steps: int = 1, *, lr: float | None = None,
                 first_order: bool = False, loss_fn: LossFn | None = None, adapt: Sequence[str] | None = None,
                 execution: str = DEFAULT_EXECUTION, chunk_size: int = DEFAULT_CHUNK, allow_unused: bool = False,
                 allow_nograd: bool = False, compile: bool | Mapping = False, checkpoint: bool = False) -> None:
        super().__init__(module, resolve_alpha(alpha, lr, 0.01), steps, loss_fn=loss_fn, execution=execution,
                         chunk_size=chunk_size)
        check_checkpoint(checkpoint, None, execution)
        if checkpoint and compile is not False:
            raise ValueError("checkpoint=True cannot be combined with compile (the compiled meta-step keeps its own "
                             "graph); pass one of them")
        if not isinstance(first_order, bool):
            raise ValueError(f"first_order must be True or False, got {first_order!r}")
        self.checkpoint = checkpoint
        self.compiled = compiled_meta_loss(compile, execution)
        self.first_order = first_order
        self.allow_unused, self.allow_nograd = allow_unused, allow_nograd
        self.adapt_names = None if adapt is None else list(adapt)
        if self.adapt_names is not None:
            unknown = sorted(set(self.adapt_names) - dict(module.named_parameters()).keys())
            if unknown:
                raise ValueError(f"adapt names parameters the module does not have: {unknown}")
        self.options = dict(alpha=self.inner_alpha, steps=steps, first_order=first_order, loss_fn=loss_fn,
                            adapt=adapt, execution=execution, chunk_size=chunk_size, allow_unused=allow_unused,
                            allow_nograd=allow_nograd, compile=compile, checkpoint=checkpoint)

    def meta_loss(self, batch: TaskBatch, loss_fn: LossFn | None = None, *, steps: int | None = None) -> Tensor:
        """Mean query loss after ``steps`` inner steps on each task's support set (see :func:`maml_loss`);
        its inner losses ``(tasks, steps)`` go to ``self.diagnostics["inner_losses"]``.

        With ``compile`` the meta-step runs compiled (:mod:`mapping.meta.compiled`): same loss and gradients.
        """
        loss, inner = self._meta_loss(batch, self.resolve_loss(loss_fn), self.steps if steps is None else steps)
        self.diagnostics = {"inner_losses": inner.detach()}
        return loss

    def _meta_loss(self, batch: TaskBatch, loss_fn: LossFn, steps: int) -> tuple[Tensor, Tensor]:
        if self.compiled is not None:
            if not isinstance(batch, TaskBatch):
                raise ValueError(f"batch must be a mapping.data.TaskBatch, got {type(batch).__name__}")
            params, alpha = self.params(), self.alpha
            return self.compiled(self._forward, loss_fn, params, batch.tensors(), steps=steps, alpha=alpha,
                                 first_order=self.first_order, adapt=self.adapt_names,
                                 chunk_size=self.chunk_size if self.execution == "chunk" else None,
                                 validate=lambda: validate_inner(
                                     self._forward, params, *batch.tensors(), steps=steps, alpha=alpha,
                                     adapt=self.adapt_names, execution=self.execution, chunk_size=self.chunk_size))
        return maml_loss(self._forward, loss_fn, self.params(), batch, steps=steps,
                         alpha=self.alpha, first_order=self.first_order, adapt=self.adapt_names,
                         execution=self.execution, chunk_size=self.chunk_size, checkpoint=self.checkpoint)


class FOMAML(MAML):
    """First-order MAML: the inner gradients are constants (Finn et al. 2017, §5.2)."""

    def __init__(self, module: nn.Module, alpha: float | None = None, steps: int = 1, **options) -> None:
        if options.get("first_order", True) is not True:
            raise ValueError("FOMAML is first-order by definition; use MAML for first_order=False")
        super().__init__(module, alpha, steps, **{**options, "first_order": True})


GRANULARITIES = ("parameter", "layer", "scalar")


class MetaSGD(MAML):
    """Meta-SGD (Li et al. 2017, eq. 3): ``theta' = theta - alpha o grad``, ``alpha`` meta-learned with ``theta``.

    ``granularity`` says how many rates are learned, each initialised to ``alpha``: ``"parameter"`` one per
    entry (the paper), ``"layer"`` one per parameter tensor (as MAML++'s per-layer rates, Antoniou et al. 2019),
    ``"scalar"`` one for the whole model; a fixed float rate is plain :class:`MAML`. The rates are an
    ``nn.ParameterList`` in the order of ``rate_names`` (any parameter names work), so ``MetaSGD.parameters()``
    hands them to the outer optimizer together with the model's.
    """

    def __init__(self, module: nn.Module, alpha: float | None = None, steps: int = 1, *,
                 granularity: str = "parameter", **options) -> None:
        super().__init__(module, alpha, steps, **options)
        alpha = self.inner_alpha
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES} (a rate per entry, per parameter "
                             f"tensor, or one for all), got {granularity!r}")
        shapes = {k: p for k, p in module.named_parameters()}
        self.rate_names = list(self.adapt_names or shapes)
        self.granularity = self.options["granularity"] = granularity
        if granularity == "scalar":
            self.rates = nn.ParameterList([nn.Parameter(torch.tensor(float(alpha)))])
        else:
            self.rates = nn.ParameterList([nn.Parameter(torch.full_like(shapes[k], float(alpha)) if
                                                        granularity == "parameter" else torch.tensor(float(alpha)))
                                           for k in self.rate_names])
        ref = next(iter(shapes.values()), None)
        if ref is not None:
            self.rates.to(ref.device, ref.dtype)

    @property
    def alpha(self) -> Alpha:
        if self.granularity == "scalar":
            return {k: self.rates[0] for k in self.rate_names}
        return dict(zip(self.rate_names, self.rates))


class ANIL(MAML):
    """ANIL (Raghu et al. 2020): inner loop on the head only. ``head`` defaults to ``module.head_names()``."""

    def __init__(self, module: nn.Module, alpha: float | None = None, steps: int = 1, *,
                 head: Sequence[str] | None = None, **options) -> None:
        if "adapt" in options:
            raise ValueError("ANIL adapts its head: pass head=[...] (parameter names), not adapt")
        if head is None:
            if not hasattr(module, "head_names"):
                raise ValueError("head must name the head's parameters for a module without head_names()")
            head = module.head_names()
        super().__init__(module, alpha, steps, adapt=head, **options)
        self.options["head"] = self.options.pop("adapt")


__all__ = ["ANIL", "FOMAML", "GRANULARITIES", "Learner", "MAML", "MetaLearner", "MetaSGD", "maml_loss"]
