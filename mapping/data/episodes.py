"""Episodic N-way K-shot sampling from a ``(classes, examples, *shape)`` tensor, fully vectorized.

The episode protocol of Vinyals et al. 2016 (Matching Networks) and Snell et al. 2017 (Prototypical
Networks): each task draws ``n_way`` distinct classes, and for each class ``k_shot + q_query``
distinct examples; the first ``k_shot`` form the support set and the rest the query set, so no
example is ever both. Labels are the class's position in the task, ``0 .. n_way - 1``.

Every random choice is the head of a batched random permutation (random keys, ``topk``), and the
examples are gathered with one advanced-indexing call: there is no Python loop over tasks or classes.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .tasks import TaskBatch


def _check_count(name: str, value: object, limit: int, why: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValueError(f"{name} must be an int in [1, {limit}] ({why}), got {value!r}")


def random_subsets(rows: tuple[int, ...], population: int, size: int,
                   generator: torch.Generator | None = None, device: torch.device | None = None) -> Tensor:
    """Indices of ``size`` distinct items out of ``population``, independently for every row.

    The first ``size`` entries of a batched random permutation ``rand(...).argsort()``, computed
    with ``topk`` (the ``size`` largest keys, in descending key order: a uniformly random subset in
    random order) so that it costs O(population) rather than a full sort. Returns shape
    ``(*rows, size)``, int64. The keys are float64 so that ties (which would favour some indices)
    have negligible probability even among thousands of items.
    """
    keys = torch.rand(*rows, population, generator=generator, dtype=torch.float64,
                      device=device)  # (*rows, population)
    return keys.topk(size, dim=-1, sorted=True).indices  # (*rows, size)


class EpisodeSampler:
    """Sample N-way K-shot classification tasks as a :class:`TaskBatch`.

    ``images`` has shape ``(classes, examples, *shape)``; for Omniglot ``(classes, 20, 28, 28)``
    (Lake et al. 2015). When the examples are 2-D (``images.dim() == 4``) they are treated as
    one-channel images and returned as ``(1, H, W)``; pass ``channel=False`` to keep ``(H, W)``.
    Any other example shape is returned unchanged, so the sampler works for any per-class data.
    """

    def __init__(self, images: Tensor, n_way: int, k_shot: int, q_query: int, *,
                 channel: bool | None = None) -> None:
        if not isinstance(images, Tensor) or images.dim() < 2:
            raise ValueError("images must be a tensor of shape (classes, examples, *shape), "
                             f"got {getattr(images, 'shape', type(images).__name__)}")
        classes, examples = images.shape[:2]
        _check_count("n_way", n_way, classes, f"images holds {classes} classes")
        _check_count("k_shot", k_shot, examples, f"images holds {examples} examples per class")
        _check_count("q_query", q_query, examples, f"images holds {examples} examples per class")
        if k_shot + q_query > examples:
            raise ValueError(f"k_shot + q_query must be at most {examples} (the examples per class, e.g. "
                             f"Omniglot's 20 drawers), so that no example is both support and query; "
                             f"got k_shot={k_shot} + q_query={q_query} = {k_shot + q_query}")
        self.images = images
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        channel = images.dim() == 4 if channel is None else channel
        self.example_shape = (1, *images.shape[2:]) if channel else tuple(images.shape[2:])

    def __repr__(self) -> str:
        return (f"EpisodeSampler(classes={self.images.shape[0]}, examples={self.images.shape[1]}, "
                f"n_way={self.n_way}, k_shot={self.k_shot}, q_query={self.q_query})")

    def sample(self, tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """``tasks`` independent episodes, drawn with ``generator`` (reproducible for a seeded one).

        Returns ``support_x (tasks, n_way * k_shot, *example_shape)``, ``support_y (tasks, n_way * k_shot)``,
        ``query_x (tasks, n_way * q_query, *example_shape)``, ``query_y (tasks, n_way * q_query)``;
        examples are grouped by class, so ``support_y[t] = [0]*k_shot + [1]*k_shot + ...``. ``info``
        holds ``classes (tasks, n_way)`` (row ``j`` has label ``j``) and the example indices
        ``support_examples (tasks, n_way, k_shot)`` and ``query_examples (tasks, n_way, q_query)``.
        Random numbers are drawn on the generator's device (``images``' device without one).
        """
        if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
            raise ValueError(f"tasks must be an int >= 1, got {tasks!r}")
        n, k, q = self.n_way, self.k_shot, self.q_query
        classes, examples = self.images.shape[:2]
        device = self.images.device
        key_device = generator.device if generator is not None else device
        chosen = random_subsets((tasks,), classes, n, generator, key_device).to(device)  # (tasks, n_way)
        picks = random_subsets((tasks, n), examples, k + q, generator, key_device).to(device)  # (tasks, n_way, k+q)
        rows = chosen[:, :, None]  # (tasks, n_way, 1)
        support_x = self.images[rows, picks[:, :, :k]]  # (tasks, n_way, k_shot, *shape), one copy each
        query_x = self.images[rows, picks[:, :, k:]]  # (tasks, n_way, q_query, *shape)
        support_x = support_x.reshape(tasks, n * k, *self.example_shape)  # (tasks, n_way*k_shot, *example_shape)
        query_x = query_x.reshape(tasks, n * q, *self.example_shape)  # (tasks, n_way*q_query, *example_shape)
        labels = torch.arange(n, device=device)  # (n_way,)
        support_y = labels.repeat_interleave(k).repeat(tasks, 1)  # (tasks, n_way*k_shot)
        query_y = labels.repeat_interleave(q).repeat(tasks, 1)  # (tasks, n_way*q_query)
        info = {"classes": chosen, "support_examples": picks[:, :, :k], "query_examples": picks[:, :, k:]}
        return TaskBatch(support_x, support_y, query_x, query_y, info=info)
