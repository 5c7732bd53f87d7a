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

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..data.tasks import TaskBatch
from .functional import (Alpha, Forward, LossFn, Params, adaptation_curve, batched_inner_loop, check_alpha, check_finite_inner,
                         check_steps, functional, params_of)


def maml_loss(forward: Forward, loss_fn: LossFn, params: Params, batch: TaskBatch, *, steps: int = 1,
              alpha: Alpha = 0.01, first_order: bool = False, adapt: Sequence[str] | None = None,
              ) -> tuple[Tensor, Tensor]:
    """Mean query loss after adapting to each task of ``batch`` (Finn et al. 2017, Algorithm 2, line 10).

    ``loss.backward()`` gives the meta-gradient. Raises ``FloatingPointError`` naming the task and inner step
    if a support loss is not finite. Returns ``(loss, inner_losses)``, ``inner_losses`` of shape ``(tasks, steps)``.
    """
    if not isinstance(batch, TaskBatch):
        raise ValueError(f"batch must be a mapping.data.TaskBatch, got {type(batch).__name__}")
    _, inner, outer = batched_inner_loop(forward, loss_fn, params, batch.support_x, batch.support_y,
                                         batch.query_x, batch.query_y, steps=steps, alpha=alpha,
                                         first_order=first_order, adapt=adapt)  # inner: (tasks, steps)
    check_finite_inner(inner)
    return outer[:, -1].mean(), inner


class Learner(nn.Module):
    """One task's adapted copy of a model (learn2learn's ``clone()``): parameters stay connected to the
    original ones, so the query loss of the adapted learner back-propagates into the meta-parameters."""

    def __init__(self, module: nn.Module, params: Params, alpha: Alpha, first_order: bool,
                 adapt: Sequence[str] | None) -> None:
        super().__init__()
        self.module = module
        self.params = dict(params)
        self.alpha, self.first_order = alpha, first_order
        self.adapt_names = list(params) if adapt is None else list(adapt)
        self.steps_taken = 0
        self._forward = functional(module)

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(self.params, x)

    def adapt(self, loss: Tensor, first_order: bool | None = None) -> "Learner":
        """One inner step ``theta' <- theta' - alpha grad loss`` in place; returns ``self``."""
        if loss.dim() != 0:
            raise ValueError(f"loss must be a scalar tensor, got shape {tuple(loss.shape)}")
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the support loss is not finite ({loss.item()}) at inner step "
                                     f"{self.steps_taken + 1}; lower alpha or check the task's data")
        first = self.first_order if first_order is None else first_order
        tensors = [self.params[k] for k in self.adapt_names]
        grads = torch.autograd.grad(loss, tensors, create_graph=not first, allow_unused=True)
        for k, g in zip(self.adapt_names, grads):
            if g is None:
                continue
            rate = self.alpha[k] if isinstance(self.alpha, dict) else self.alpha
            self.params[k] = self.params[k] - rate * (g.detach() if first else g)
        self.steps_taken += 1
        return self


class MAML(nn.Module):
    """MAML around any ``nn.Module`` (learn2learn: ``l2l.algorithms.MAML(model, lr, first_order)``).

    >>> maml = MAML(model, alpha=0.01, steps=1)
    >>> loss, _ = maml.meta_loss(batch, F.mse_loss)      # vmapped over tasks
    >>> loss.backward(); optimizer.step()
    >>> learner = maml.clone(); learner.adapt(F.mse_loss(learner(x_s), y_s))   # one task at a time
    """

    def __init__(self, module: nn.Module, alpha: float = 0.01, steps: int = 1, first_order: bool = False,
                 adapt: Sequence[str] | None = None) -> None:
        super().__init__()
        check_alpha(alpha)
        check_steps(steps)
        self.module = module
        self.inner_alpha, self.steps, self.first_order = float(alpha), steps, first_order
        self.adapt_names = None if adapt is None else list(adapt)
        self._forward = functional(module)
        if self.adapt_names is not None:
            unknown = sorted(set(self.adapt_names) - dict(module.named_parameters()).keys())
            if unknown:
                raise ValueError(f"adapt names parameters the module does not have: {unknown}")

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    @property
    def alpha(self) -> Alpha:
        """The inner learning rate: a float, or per-parameter tensors for Meta-SGD."""
        return self.inner_alpha

    def params(self) -> Params:
        return params_of(self.module)

    def meta_loss(self, batch: TaskBatch, loss_fn: LossFn, steps: int | None = None) -> tuple[Tensor, Tensor]:
        """Mean query loss after ``steps`` inner steps on each task's support set (see :func:`maml_loss`)."""
        return maml_loss(self._forward, loss_fn, self.params(), batch, steps=self.steps if steps is None else steps,
                         alpha=self.alpha, first_order=self.first_order, adapt=self.adapt_names)

    def adaptation_curve(self, batch: TaskBatch, loss_fn: LossFn, steps: int, alpha: Alpha | None = None,
                         check: bool = True) -> Tensor:
        """Query loss of each task after 0..steps inner steps, ``(tasks, steps + 1)``, without meta-gradients."""
        return adaptation_curve(self._forward, loss_fn, self.params(), *batch.tensors(), steps=steps,
                                alpha=self.alpha if alpha is None else alpha, adapt=self.adapt_names, check=check)

    def clone(self, first_order: bool | None = None) -> Learner:
        """A :class:`Learner` for one task, differentiable back to this module's parameters."""
        first = self.first_order if first_order is None else first_order
        return Learner(self.module, self.params(), self.alpha, first, self.adapt_names)


class FOMAML(MAML):
    """First-order MAML: the inner gradients are constants (Finn et al. 2017, §5.2)."""

    def __init__(self, module: nn.Module, alpha: float = 0.01, steps: int = 1,
                 adapt: Sequence[str] | None = None) -> None:
        super().__init__(module, alpha, steps, first_order=True, adapt=adapt)


class MetaSGD(MAML):
    """Meta-SGD (Li et al. 2017): a learned inner learning rate for every parameter entry, initialised to ``alpha``.

    The rates live in ``self.rates`` as an ``nn.ParameterDict`` (names with ``.`` replaced by ``__``) so that
    ``MetaSGD.parameters()`` hands them to the outer optimizer together with the model's.
    """

    def __init__(self, module: nn.Module, alpha: float = 0.01, steps: int = 1, first_order: bool = False,
                 adapt: Sequence[str] | None = None) -> None:
        super().__init__(module, alpha, steps, first_order, adapt)
        names = self.adapt_names or list(dict(module.named_parameters()))
        shapes = {k: p for k, p in module.named_parameters()}
        self.rates = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(torch.full_like(shapes[k], float(alpha)))
                                       for k in names})

    @property
    def alpha(self) -> Alpha:
        return {k.replace("__", "."): v for k, v in self.rates.items()}


class ANIL(MAML):
    """ANIL (Raghu et al. 2020): inner loop on the head only. ``head`` defaults to ``module.head_names()``."""

    def __init__(self, module: nn.Module, alpha: float = 0.01, steps: int = 1, first_order: bool = False,
                 head: Sequence[str] | None = None) -> None:
        if head is None:
            if not hasattr(module, "head_names"):
                raise ValueError("head must name the head's parameters for a module without head_names()")
            head = module.head_names()
        super().__init__(module, alpha, steps, first_order, adapt=head)
