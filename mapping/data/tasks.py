"""One representation of a batch of few-shot tasks, for regression and classification alike.

A :class:`TaskBatch` stacks ``tasks`` independent tasks, each with a support set (used to adapt)
and a query set (used to evaluate the adapted model)::

    support_x: (tasks, support_size, *x_shape)    support_y: (tasks, support_size, *y_shape)
    query_x:   (tasks, query_size,   *x_shape)    query_y:   (tasks, query_size,   *y_shape)

For sinusoid regression ``x_shape = y_shape = (1,)``; for N-way K-shot classification
``support_size = n_way * k_shot``, ``x_shape`` is the image shape and ``y`` holds class indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class TaskBatch:
    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        validate_batch(self.support_x, self.support_y, self.query_x, self.query_y)

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "TaskBatch":
        """Move every tensor to ``device``; cast floating tensors (and info tensors) to ``dtype`` if given."""
        def move(t: Any) -> Any:
            if not isinstance(t, Tensor):
                return t
            t = t.to(device)
            return t.to(dtype) if dtype is not None and t.is_floating_point() else t
        return replace(self, support_x=move(self.support_x), support_y=move(self.support_y),
                       query_x=move(self.query_x), query_y=move(self.query_y),
                       info={k: move(v) for k, v in self.info.items()})

    def task(self, i: int) -> "TaskBatch":
        """The ``i``-th task as a batch of one."""
        s = slice(i, i + 1)
        return replace(self, support_x=self.support_x[s], support_y=self.support_y[s],
                       query_x=self.query_x[s], query_y=self.query_y[s],
                       info={k: v[s] if isinstance(v, Tensor) and v.dim() > 0 else v for k, v in self.info.items()})

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.support_x, self.support_y, self.query_x, self.query_y


def validate_batch(support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor) -> None:
    """Raise ``ValueError`` naming the argument when the four tensors do not form a task batch."""
    named = {"support_x": support_x, "support_y": support_y, "query_x": query_x, "query_y": query_y}
    for name, t in named.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (tasks, shots, ...), got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (tasks, shots, ...), got shape {tuple(t.shape)}; for one task, "
                             f"add the tasks dimension: {name}[None]")
    if support_x.is_floating_point() and support_x.dim() == 2:
        raise ValueError(f"support_x has shape {tuple(support_x.shape)}: {support_x.shape[0]} tasks of "
                         f"{support_x.shape[1]} scalar examples. For one task of {support_x.shape[0]} examples add "
                         f"the tasks dimension (support_x[None], shape {(1, *support_x.shape)}); scalar features "
                         "need a trailing dimension, shape (tasks, shots, 1)")
    tasks = support_x.shape[0]
    for name, t in named.items():
        if t.shape[0] != tasks:
            raise ValueError(f"{name} has {t.shape[0]} tasks but support_x has {tasks}; "
                             "all four tensors must share the leading (tasks) dimension")
    if tasks == 0:
        raise ValueError("support_x holds 0 tasks; a task batch needs at least one task, shape (tasks, shots, ...)")
    for name in ("support_x", "query_x"):
        if named[name].shape[1] == 0:
            raise ValueError(f"{name} holds 0 examples per task; every task needs at least one support and one "
                             "query example")
    if support_y.shape[1] != support_x.shape[1]:
        raise ValueError(f"support_y has {support_y.shape[1]} shots but support_x has {support_x.shape[1]}")
    if query_y.shape[1] != query_x.shape[1]:
        raise ValueError(f"query_y has {query_y.shape[1]} shots but query_x has {query_x.shape[1]}")
    if support_x.shape[2:] != query_x.shape[2:]:
        raise ValueError(f"query_x has per-example shape {tuple(query_x.shape[2:])} but support_x has "
                         f"{tuple(support_x.shape[2:])}; support and query must hold the same kind of input")
    if support_y.shape[2:] != query_y.shape[2:]:
        raise ValueError(f"query_y has per-example shape {tuple(query_y.shape[2:])} but support_y has "
                         f"{tuple(support_y.shape[2:])}")


__all__ = ["TaskBatch", "validate_batch"]
