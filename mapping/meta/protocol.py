"""The one face every meta-learner shows: how to train it, how to use it on a new task.

Every learner of :mod:`mapping.meta` (MAML, first-order MAML, Meta-SGD, ANIL, Reptile; Prototypical, Matching
and Siamese networks) answers the same two calls on a :class:`~mapping.data.TaskBatch` of ``tasks`` tasks:

``meta_loss(batch, loss_fn=None) -> Tensor``
    A 0-dim tensor. ``loss.backward()`` leaves the meta-gradient in each parameter's ``.grad``, so any
    ``torch.optim`` optimizer takes the outer step. For MAML and its relatives it is the mean query loss after
    adaptation (Finn et al. 2017, Algorithm 2, line 10); for Reptile, whose update is not the gradient of a
    loss, the value is the mean support loss before adaptation and the backward hands over
    ``theta - mean_i theta'_i`` (Nichol et al. 2018, Algorithm 2); for the metric methods it is the episode's
    query loss. ``loss_fn(output, target)`` defaults to the one given to the constructor; the metric methods
    default to their papers' losses. After the call, ``learner.diagnostics`` holds detached tensors about it:
    ``"inner_losses"`` ``(tasks, steps)`` for the optimization-based methods, ``"accuracy"`` (a fraction) for
    the metric ones.

``predict(support_x, support_y, query_x, loss_fn=None, steps=None) -> Tensor``
    The outputs for each task's queries, ``(tasks, queries, ...)``, after adapting to that task's support set:
    ``steps`` inner steps for the optimization-based methods (default: the learner's own), the prototypes,
    attention or pair scores for the metric ones (``loss_fn`` and ``steps`` unused). No meta-gradient is kept.

Optimization-based learners also give ``adapted(support_x, support_y, loss_fn=None, steps=None)``, each task's
adapted parameters ``{name: (tasks, *shape)}`` and inner losses; ``functional_call(params, x)``, the wrapped
module as a function of such parameters; ``adaptation_curve(batch, loss_fn=None, steps=None)``; and
learn2learn's ``clone()`` / ``adapt(loss)`` for one task at a time. Their constructors read
``(module, alpha, steps, *, loss_fn, execution, chunk_size, compile, ...)`` (MAML's family adds
``first_order``, Reptile ``use_query`` and ``inner``), and take learn2learn's ``lr=`` for ``alpha``. A new method is a class with these two calls; :class:`Learns` checks it.

The model-based learners, :class:`~mapping.meta.MANN` and :class:`~mapping.meta.LSTMLearner` (Santoro et al.
2016), are where the protocol does not fit: their episode is one sequence in which each input arrives with the
previous input's label (:func:`~mapping.data.episode_sequences`), with no support set to adapt to and no query
set apart, so they keep ``forward(x, y_prev)`` and are trained as any sequence model.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from ..data.tasks import TaskBatch


@runtime_checkable
class Learns(Protocol):
    """What :func:`isinstance` checks of a learner: the two calls of this module's docstring."""

    def meta_loss(self, batch: TaskBatch, loss_fn=None) -> Tensor: ...

    def predict(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, loss_fn=None,
                steps: int | None = None) -> Tensor: ...


__all__ = ["Learns"]
