"""An optional :func:`torch.compile` path for the meta-step, with an eager fallback and its compile time.

The eager meta-step builds a graph of many tiny kernels and walks it back with ``loss.backward()``; for a
small network the time goes into Python and dispatch, not arithmetic. Here the whole meta-step, forward
*and* meta-gradient, is one pure function of the parameters (the outer gradient taken with
:func:`torch.func.grad_and_value` around the vmapped inner loop of :mod:`mapping.meta.functional`), which
:func:`torch.compile` traces once into fused kernels:

    (grad_theta, grad_alpha), (sum_i L_query_i(theta'_i), inner) = compiled(theta, alpha, support, query)

    theta'_i = theta - alpha * grad L_support_i(theta)                       (Finn et al. 2017, eq. 1)

The gradients reach ``loss.backward()`` through :class:`~mapping.meta.chunked.Precomputed`, so training code
is unchanged. :class:`CompiledFn` compiles on the first call for each input signature (shapes, dtypes,
devices), adds the wall time of those calls to ``compile_seconds``, and falls back to the eager function,
with a warning naming the error, if compiling fails (no C compiler, an unsupported op).
"""
from __future__ import annotations

import itertools
import time
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import grad_and_value
from torch.nn.modules.batchnorm import _NormBase

from ..nn.norms import check_vmappable
from .checks import check_finite_inner
from .chunked import Precomputed
from .functional import Alpha, Forward, LossFn, Params, batched_inner_loop

COMPILE_ERRORS = (Exception,)  # dynamo, inductor and C-compiler failures have no common base class
_COUNTER = itertools.count()


def _own_code(fn: Callable) -> Callable:
    """A copy of the function ``fn`` with a code object of its own.

    torch.compile keeps its cache, and its limit of 8 recompilations, per code object; every meta-step built
    here shares one, so without this the ninth model or shape would silently run eagerly.
    """
    if isinstance(fn, types.MethodType):  # a bound method: copy its function, bind the copy
        return types.MethodType(_own_code(fn.__func__), fn.__self__)
    if not isinstance(fn, types.FunctionType):
        return fn
    code = fn.__code__
    own = code.replace(co_name=f"{code.co_name}_{next(_COUNTER)}")
    return types.FunctionType(own, fn.__globals__, own.co_name, fn.__defaults__, fn.__closure__)


def _signature(args: tuple) -> tuple:
    """Shapes, dtypes and devices of the tensors in ``args`` (dicts of tensors looked into, other values as they
    are): a change makes torch.compile compile again."""
    out = []
    for a in args:
        for t in a.values() if isinstance(a, dict) else (a,):
            out.append((t.shape, t.dtype, t.device) if isinstance(t, Tensor) else t)
    return tuple(out)


def _reason(error: BaseException) -> str:
    """The error and its root cause, one line each (dynamo wraps a backend's error in its own)."""
    root = error
    while (getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = getattr(root, "inner_exception", None) or root.__cause__
    first = (str(root).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}" + ("" if root is error else f" from {type(root).__name__}") + f": {first}"


class CompiledFn:
    """``fn`` run through :func:`torch.compile` (``options`` are passed on), falling back to ``fn`` on failure.

    ``compile_seconds``: wall time of the first call for each new input signature (tracing, code generation
    and one run); ``calls``; ``error``: why compiling failed (then every call runs ``fn`` eagerly).
    """

    def __init__(self, fn: Callable, **options: Any) -> None:
        if not callable(fn):
            raise ValueError(f"fn must be callable, got {type(fn).__name__}")
        # dynamic=False: a new chunk shape gets one more static graph. cpp_wrapper: the generated code calls its
        # kernels from C++ instead of Python, 9% off the sinusoid meta-step for 3 s more compiling (measured).
        if options.get("backend", "inductor") == "inductor" and "mode" not in options:
            options = {**options, "options": {"cpp_wrapper": True, **options.get("options", {})}}
        self.fn, self.options = fn, {"dynamic": False, **options}
        self.compiled = torch.compile(_own_code(fn), **self.options)
        self.seen: set[tuple] = set()
        self.compile_seconds, self.calls, self.error = 0.0, 0, None

    @property
    def active(self) -> bool:
        """True while the compiled function is in use (no failure so far)."""
        return self.error is None

    def __call__(self, *args: Any, signature: tuple | None = None) -> Any:
        """``fn(*args)``, compiled; ``signature`` (of ``args``, see :meth:`signature`) saves computing it again."""
        self.calls += 1
        if self.error is not None:
            return self.fn(*args)
        signature = _signature(args) if signature is None else signature
        if signature in self.seen:
            return self.compiled(*args)
        tic = time.perf_counter()
        try:
            out = self.compiled(*args)
        except COMPILE_ERRORS as error:  # a user error in fn itself raises again, eagerly, below
            self.error = _reason(error)
            warnings.warn(f"torch.compile failed ({self.error}); running the eager meta-step instead",
                          RuntimeWarning, stacklevel=2)
            return self.fn(*args)
        self.compile_seconds += time.perf_counter() - tic
        self.seen.add(signature)
        return out


def meta_value_and_grad(forward: Forward, loss_fn: LossFn, *, steps: int, alpha: Alpha, first_order: bool,
                        adapt: Sequence[str] | None) -> Callable:
    """The pure meta-step: ``f(params, rates, weight, sx, sy, qx, qy) -> ((g_params, g_rates), (loss, inner, ok))``.

    ``loss`` is ``weight`` times the sum over the given tasks of the query loss after ``steps`` inner steps
    (``weight = 1 / tasks``: the meta-loss), ``inner`` the support losses ``(tasks, steps)``, ``ok`` whether
    the data and ``inner`` are all finite. ``rates`` are Meta-SGD's learned rates (a dict) or ``{}`` for the
    fixed float ``alpha``; their gradient is ``g_rates``.
    """
    def total(params: Params, rates: Params, weight: Tensor, sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor
              ) -> tuple[Tensor, Tensor]:
        _, inner, outer = batched_inner_loop(forward, loss_fn, params, sx, sy, qx, qy, steps=steps,
                                             alpha=rates if rates else alpha, first_order=first_order,
                                             adapt=adapt, execution="vmap", validate=False)
        return outer[:, -1].sum() * weight, inner  # (), (tasks, steps)

    def meta_step(params: Params, rates: Params, weight: Tensor, *data: Tensor) -> tuple:
        grads, (loss, inner) = grad_and_value(total, argnums=(0, 1), has_aux=True)(params, rates, weight, *data)
        finite = torch.stack([torch.isfinite(t).all() for t in (*data, inner)]).all()  # (): one check, in graph
        return grads, (loss, inner, finite)
    return meta_step


class CompiledMetaLoss:
    """What :class:`~mapping.meta.MAML` (and FOMAML, Meta-SGD, ANIL) calls when built with ``compile=True``.

    One compiled meta-step per ``(loss_fn, steps)``; ``options`` go to :func:`torch.compile`.
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.steps_fns: dict[tuple, CompiledFn] = {}
        self.validated: set[tuple] = set()
        self.norms = True  # whether the module has norm layers whose train()/eval() mode must be checked again

    @property
    def compile_seconds(self) -> float:
        return sum(f.compile_seconds for f in self.steps_fns.values())

    @property
    def error(self) -> str | None:
        return next((f.error for f in self.steps_fns.values() if f.error), None)

    def function(self, forward: Forward, loss_fn: LossFn, *, steps: int, alpha: Alpha, first_order: bool,
                 adapt: Sequence[str] | None) -> CompiledFn:
        fixed = None if isinstance(alpha, Mapping) else float(alpha)
        key = (loss_fn, steps, fixed, first_order, tuple(adapt) if adapt is not None else None)
        if key not in self.steps_fns:
            self.steps_fns[key] = CompiledFn(meta_value_and_grad(forward, loss_fn, steps=steps, alpha=fixed,
                                                                 first_order=first_order, adapt=adapt),
                                             **self.options)
        return self.steps_fns[key]

    def __call__(self, forward: Forward, loss_fn: LossFn, params: Params, tensors: tuple[Tensor, ...], *,
                 steps: int, alpha: Alpha, first_order: bool, adapt: Sequence[str] | None,
                 chunk_size: int | None, validate: Callable[[], None]) -> tuple[Tensor, Tensor]:
        """Mean query loss over tasks, whose ``backward()`` hands on the compiled meta-gradients; and inner.

        ``validate()`` runs every argument check (:func:`~mapping.meta.functional.validate_inner`); it runs on
        the first call with each signature, and again whenever the data or a support loss is not finite, so
        that the error names the culprit. Otherwise only the module's mode is checked again.
        """
        fn = self.function(forward, loss_fn, steps=steps, alpha=alpha, first_order=first_order, adapt=adapt)
        rates = dict(alpha) if isinstance(alpha, Mapping) else {}
        plain = {k: v.detach() for k, v in params.items()}
        plain_rates = {k: v.detach() for k, v in rates.items()}
        tasks = tensors[0].shape[0]
        size = tasks if chunk_size is None else chunk_size
        signature = _signature((plain, plain_rates, *tensors, size))
        module = getattr(forward, "module", None)
        if signature not in self.validated:
            validate()
            self.validated.add(signature)
            self.norms = module is not None and any(isinstance(m, _NormBase) for m in module.modules())
        elif self.norms:
            check_vmappable(module)  # train()/eval() may change between calls
        weight = tensors[0].new_tensor(1.0 / tasks, dtype=next(iter(plain.values())).dtype)  # ()
        g_params, g_rates, total, inners = None, None, None, []
        for s in range(0, tasks, size):
            (gp, gr), (loss_sum, inner, ok) = fn(plain, plain_rates, weight, *(t[s:s + size] for t in tensors),
                                                 signature=(signature, min(size, tasks - s)))
            if not ok:  # raise before any gradient is handed on, naming the data or the task and step
                validate()
                check_finite_inner(inner, first_task=s)  # (chunk, steps)
            inners.append(inner)
            g_params = gp if g_params is None else {k: g_params[k] + gp[k] for k in gp}
            g_rates = gr if g_rates is None else {k: g_rates[k] + gr[k] for k in gr}
            total = loss_sum if total is None else total + loss_sum
        inner = torch.cat(inners)  # (tasks, steps)
        names = [("p", k) for k, v in params.items() if v.requires_grad]
        names += [("a", k) for k, v in rates.items() if isinstance(v, Tensor) and v.requires_grad]
        loss = total
        if not names or not torch.is_grad_enabled():
            return loss, inner
        grads = tuple((g_params if kind == "p" else g_rates)[k] for kind, k in names)
        inputs = [params[k] if kind == "p" else rates[k] for kind, k in names]
        return Precomputed.apply(loss, grads, *inputs), inner


def sgd_adapted(forward: Forward, loss_fn: LossFn, *, steps: int, alpha: Alpha) -> Callable:
    """The pure inner loop of Reptile: ``f(params, x, y) -> (adapted {name: (tasks, *shape)}, inner)``."""
    def adapted(params: Params, x: Tensor, y: Tensor) -> tuple[Params, Tensor]:
        with torch.no_grad():
            fast, inner, _ = batched_inner_loop(forward, loss_fn, params, x, y, steps=steps, alpha=alpha,
                                                first_order=True, execution="vmap", validate=False)
        return fast, inner  # {name: (tasks, *shape)}, (tasks, steps)
    return adapted


def compile_seconds(learner: Any) -> float | None:
    """Seconds a meta-learner built with ``compile`` spent compiling so far (``None``: not compiled, or fell back)."""
    compiled = getattr(learner, "compiled", None)
    fns = [compiled] if isinstance(compiled, CompiledFn) else list(getattr(compiled, "steps_fns", {}).values())
    if not fns or any(f.error for f in fns):
        return None
    return sum(f.compile_seconds for f in fns)


def compiled_meta_loss(compile: bool | Mapping, execution: str) -> CompiledMetaLoss | None:
    """The ``compile`` option of the meta-learners: ``False``, ``True``, or a dict of torch.compile options."""
    if isinstance(compile, bool):
        options = {} if compile else None
    elif isinstance(compile, Mapping):
        options = dict(compile)
    else:
        raise ValueError(f"compile must be a bool or a dict of torch.compile options, got {compile!r}")
    if options is not None and execution == "loop":
        raise ValueError("compile=True needs execution='vmap' or 'chunk' (the compiled meta-step is vmapped); "
                         "execution='loop' runs eagerly")
    return None if options is None else CompiledMetaLoss(**options)


__all__ = ["COMPILE_ERRORS", "CompiledFn", "CompiledMetaLoss", "compile_seconds", "compiled_meta_loss",
           "meta_value_and_grad",
           "sgd_adapted"]
