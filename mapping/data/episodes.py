"""Episodic N-way K-shot sampling over any labelled data, fully vectorized.

The episode protocol of Vinyals et al. 2016 (Matching Networks) and Snell et al. 2017 (Prototypical
Networks): each task draws ``n_way`` distinct classes, and for each class ``k_shot + q_query``
distinct examples; the first ``k_shot`` form the support set and the rest the query set, so no
example is ever both. Labels are the class's position in the task, ``0 .. n_way - 1``.

One sampler, three ways in: a ``(classes, examples, *shape)`` tensor (Omniglot, 20 drawings per class;
:meth:`OmniglotSplit.sampler <mapping.data.OmniglotSplit.sampler>`), tensors ``x (N, *shape)`` and labels
``y (N,)`` (:meth:`EpisodeSampler.from_labels`), or a map-style dataset of ``(x, label)``
(:meth:`EpisodeSampler.from_dataset`). All three group the dataset indices by class in one padded table
and draw from it as :mod:`mapping.data.sampler` describes: random keys and ``topk``, no Python loop over
tasks or classes. :meth:`EpisodeSampler.batch_sampler` and :attr:`EpisodeSampler.collate` give the same
episodes through a ``torch.utils.data.DataLoader``.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from ..checks import check_int
from .sampler import (ClassTable, EpisodeBatchSampler, EpisodeCollate, dataset_labels, draw_episodes,
                      episode_batch, label_tensor)
from .tasks import TaskBatch

__all__ = ["EpisodeSampler"]


class EpisodeSampler:
    """Sample N-way K-shot classification tasks as a :class:`TaskBatch`.

    ``images`` has shape ``(classes, examples, *shape)``; for Omniglot ``(classes, 20, 28, 28)``
    (Lake et al. 2015). When the examples are 2-D (``images.dim() == 4``) they are treated as
    one-channel images and returned as ``(1, H, W)``; pass ``channel=False`` to keep ``(H, W)``.
    Any other example shape is returned unchanged, so the sampler works for any per-class data.
    Data with labels rather than one row per class: :meth:`from_labels` and :meth:`from_dataset`.

    Attributes: ``n_way``, ``k_shot``, ``q_query``; ``classes`` ``(classes,)`` the labels that can be drawn;
    ``skipped_classes`` the labels with fewer than ``k_shot + q_query`` examples, never drawn; ``images`` the
    ``(classes, examples, *shape)`` tensor of this constructor (``None`` for the other two forms); ``x`` the
    examples ``(N, *shape)`` of the tensor forms (``None`` for a dataset); ``labels`` ``(N,)``; ``dataset``.
    """

    def __init__(self, images: Tensor, n_way: int, k_shot: int, q_query: int, *,
                 channel: bool | None = None) -> None:
        if not isinstance(images, Tensor) or images.dim() < 2:
            raise ValueError("images must be a tensor of shape (classes, examples, *shape), "
                             f"got {getattr(images, 'shape', type(images).__name__)}")
        classes, examples = images.shape[:2]
        check_int("n_way", n_way, 1, classes, f"images holds {classes} classes")
        check_int("k_shot", k_shot, 1, examples, f"images holds {examples} examples per class")
        check_int("q_query", q_query, 1, examples, f"images holds {examples} examples per class")
        if k_shot + q_query > examples:
            raise ValueError(f"k_shot + q_query must be at most {examples} (the examples per class, e.g. "
                             f"Omniglot's 20 drawers), so that no example is both support and query; "
                             f"got k_shot={k_shot} + q_query={q_query} = {k_shot + q_query}")
        channel = images.dim() == 4 if channel is None else channel
        example_shape = (1, *images.shape[2:]) if channel else tuple(images.shape[2:])
        x = images.reshape(classes * examples, *images.shape[2:])  # (classes*examples, *shape), a view if contiguous
        y = torch.arange(classes, device=images.device).repeat_interleave(examples)  # (classes*examples,)
        self._setup(x, y, None, n_way, k_shot, q_query, example_shape)
        self.images = images

    @classmethod
    def from_labels(cls, x: Tensor, y: Tensor, n_way: int, k_shot: int, q_query: int) -> "EpisodeSampler":
        """A sampler over examples ``x (N, *shape)`` with labels ``y (N,)`` of any integer values.

        Classes may differ in size; those with fewer than ``k_shot + q_query`` examples are never drawn
        and are listed in ``skipped_classes``. Episodes come as ``(tasks, shots, *shape)``.
        """
        if not isinstance(x, Tensor) or x.dim() < 1:
            raise ValueError("x must be a tensor of examples of shape (N, *shape), "
                             f"got {getattr(x, 'shape', type(x).__name__)}")
        if not isinstance(y, Tensor):
            raise ValueError(f"y must be a 1-D integer torch.Tensor of labels (N,), got {type(y).__name__}")
        y = label_tensor("y", y).to(x.device)  # (N,)
        if len(y) != len(x):
            raise ValueError(f"x and y must hold the same number of examples: x has shape {tuple(x.shape)} "
                             f"(N={len(x)}) but y has {len(y)} labels")
        sampler = cls.__new__(cls)
        sampler._setup(x, y, None, n_way, k_shot, q_query, tuple(x.shape[1:]))
        return sampler

    @classmethod
    def from_dataset(cls, dataset: Dataset, n_way: int, k_shot: int, q_query: int,
                     labels: Any = None) -> "EpisodeSampler":
        """A sampler over any map-style ``dataset`` whose items are ``(x, label)`` with an integer label.

        Labels come from ``labels`` (one per example), else ``dataset.targets`` (torchvision's datasets),
        else one pass ``dataset[i][1]`` over the dataset. Drawing stays vectorized; :meth:`sample` then
        loads the drawn examples with ``dataset[i]`` one by one and stacks them, the only Python loop
        (a DataLoader with :meth:`batch_sampler` and workers does that loading in parallel).
        """
        y = dataset_labels(dataset, labels)  # (N,)
        sampler = cls.__new__(cls)
        sampler._setup(None, y, dataset, n_way, k_shot, q_query, None)
        return sampler

    def _setup(self, x: Tensor | None, y: Tensor, dataset: Dataset | None, n_way: int, k_shot: int,
               q_query: int, example_shape: tuple[int, ...] | None) -> None:
        """Validate the counts against the class sizes of ``y`` and build the class table."""
        full = ClassTable.from_labels(y)
        largest, total = int(full.counts.max()), len(full.labels)
        check_int("k_shot", k_shot, 1, largest, f"the largest class has {largest} examples")
        check_int("q_query", q_query, 1, largest, f"the largest class has {largest} examples")
        if k_shot + q_query > largest:
            raise ValueError(f"k_shot + q_query must be at most {largest} (the examples of the largest class), so "
                             f"that no example is both support and query; got k_shot={k_shot} + q_query={q_query}")
        check_int("n_way", n_way, 1, total, f"the labels name {total} classes")
        self.table, self.skipped_classes = full.at_least(k_shot + q_query)
        usable = len(self.table.labels)
        if usable < n_way:
            raise ValueError(f"n_way={n_way} needs {n_way} classes with at least k_shot + q_query = "
                             f"{k_shot + q_query} examples, but only {usable} of the {total} classes have that many "
                             f"(class sizes {int(full.counts.min())}..{largest}); lower n_way, k_shot or q_query")
        self.x, self.labels, self.dataset, self.images = x, y, dataset, None
        self.n_way, self.k_shot, self.q_query = n_way, k_shot, q_query
        self.example_shape = example_shape

    @property
    def classes(self) -> Tensor:
        """``(classes,)`` the original labels that episodes are drawn from, in increasing order."""
        return self.table.labels

    def __repr__(self) -> str:
        if self.images is not None:
            return (f"EpisodeSampler(classes={self.images.shape[0]}, examples={self.images.shape[1]}, "
                    f"n_way={self.n_way}, k_shot={self.k_shot}, q_query={self.q_query})")
        counts = self.table.counts
        return (f"EpisodeSampler(classes={len(counts)}, examples={int(counts.min())}..{int(counts.max())}, "
                f"n_way={self.n_way}, k_shot={self.k_shot}, q_query={self.q_query}, "
                f"skipped_classes={len(self.skipped_classes)})")

    def sample_indices(self, tasks: int, generator: torch.Generator | None = None) -> Tensor:
        """Dataset indices ``(tasks, n_way, k_shot + q_query)`` of ``tasks`` episodes, support before query;
        the draw of :meth:`sample` for the same generator state."""
        check_int("tasks", tasks, 1)
        return draw_episodes(self.table, tasks, self.n_way, self.k_shot + self.q_query, generator).indices

    def sample(self, tasks: int, generator: torch.Generator | None = None) -> TaskBatch:
        """``tasks`` independent episodes, drawn with ``generator`` (reproducible for a seeded one).

        Returns ``support_x (tasks, n_way * k_shot, *example_shape)``, ``support_y (tasks, n_way * k_shot)``,
        ``query_x (tasks, n_way * q_query, *example_shape)``, ``query_y (tasks, n_way * q_query)``;
        examples are grouped by class, so ``support_y[t] = [0]*k_shot + [1]*k_shot + ...``. ``info``
        holds ``classes (tasks, n_way)`` (the original label of label ``j`` in row ``j``), the positions
        of the examples within their class ``support_examples (tasks, n_way, k_shot)`` and ``query_examples
        (tasks, n_way, q_query)`` (for ``images``: the example index), and their dataset indices
        ``support_indices`` and ``query_indices`` of the same shapes (for ``images``: ``class * examples +
        example``). Random numbers are drawn on the generator's device (the data's device without one).
        """
        check_int("tasks", tasks, 1)
        k = self.k_shot
        draw = draw_episodes(self.table, tasks, self.n_way, k + self.q_query, generator)
        info = {"classes": self.table.labels[draw.rows],  # (tasks, n_way)
                "support_examples": draw.slots[..., :k], "query_examples": draw.slots[..., k:],
                "support_indices": draw.indices[..., :k], "query_indices": draw.indices[..., k:]}
        if self.dataset is None:
            support = self.x[draw.indices[..., :k]]  # (tasks, n_way, k_shot, *shape), one copy
            query = self.x[draw.indices[..., k:]]  # (tasks, n_way, q_query, *shape)
            return episode_batch(support, query, self.example_shape, info)
        return self._load(draw.indices, info)

    def _load(self, indices: Tensor, info: dict) -> TaskBatch:
        """Load the examples at ``indices (tasks, n_way, k+q)`` from the dataset, one ``dataset[i]`` each."""
        batch = self.collate([self.dataset[i] for i in indices.flatten().tolist()])
        if not torch.equal(batch.info["classes"], info["classes"]):
            raise ValueError("the dataset's items carry other labels than the labels the sampler was built from "
                             "(labels=... or dataset.targets); pass labels that match dataset[i][1]")
        return replace(batch, info=info)

    @property
    def collate(self) -> EpisodeCollate:
        """``collate_fn`` for a DataLoader over :meth:`batch_sampler`: ``(x, label)`` items -> :class:`TaskBatch`."""
        return EpisodeCollate(self.n_way, self.k_shot, self.q_query,
                              self.example_shape if self.images is not None else None)

    @property
    def source(self) -> Dataset:
        """The dataset the indices refer to: ``dataset``, or ``TensorDataset(x, labels)`` for the tensor forms."""
        return self.dataset if self.dataset is not None else TensorDataset(self.x, self.labels)

    def batch_sampler(self, batches: int, tasks: int = 1, generator: torch.Generator | None = None,
                      seed: int | None = None) -> EpisodeBatchSampler:
        """A ``torch.utils.data.Sampler`` of ``batches`` flat index lists, each ``tasks`` episodes, for
        ``DataLoader(sampler.source, batch_sampler=..., collate_fn=sampler.collate, num_workers=...)``.

        With ``generator`` the loader yields the same episodes as ``sample(tasks, generator)`` called
        ``batches`` times; ``seed`` gives the same episodes every epoch; see :class:`EpisodeBatchSampler`.
        """
        return EpisodeBatchSampler(self.sample_indices, batches, tasks, generator, seed)
