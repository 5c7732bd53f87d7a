"""The general part of episodic sampling: a padded class table over any labelled data, vectorised draws,
and the two DataLoader pieces (a batch sampler of flat index lists and a collate function).

The episode protocol of Vinyals et al. 2016 (Matching Networks) and Snell et al. 2017 (Prototypical
Networks): each task draws ``n_way`` distinct classes and, for each, ``k_shot + q_query`` distinct
examples; the first ``k_shot`` are the support set and the rest the query set, so no example is both.
Labels are the class's position in the task, ``0 .. n_way - 1``.

Classes of different sizes share one index table ``(classes, max_count)`` padded with ``-1``. A draw
gives every slot a random key in ``[0, 1)``, sets the keys of padded slots to ``-1`` and keeps the
``k_shot + q_query`` largest (``topk``): a uniformly random subset of the class's real examples in
random order. Only classes with at least ``k_shot + q_query`` examples are in the table, so padding
is never drawn. When every class has the same size nothing is masked and a draw is exactly the one of
two :func:`random_subsets` calls (classes, then examples), as the sampler always did.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.utils.data import IterableDataset, Sampler

from ..checks import check_int
from .tasks import TaskBatch


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


def label_tensor(name: str, labels: Any) -> Tensor:
    """``labels`` (a tensor, array or sequence of ints) as a 1-D int64 tensor, or ``ValueError`` naming ``name``."""
    if not isinstance(labels, Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"{name} must be a 1-D integer tensor of labels (N,), got {type(labels).__name__} "
                             f"that is not convertible to one ({error})") from error
    if labels.dim() != 1 or labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name} must be a 1-D integer tensor of labels (N,), got dtype {labels.dtype} "
                         f"and shape {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError(f"{name} must hold at least one label (N >= 1), got an empty tensor")
    return labels.long()  # (N,)


@dataclass(frozen=True)
class ClassTable:
    """Dataset indices grouped by class: row ``c`` lists the examples of label ``labels[c]``, padded with -1."""

    index: Tensor  # (classes, max_count) int64 dataset indices, -1 = padding
    counts: Tensor  # (classes,) int64 examples of each class
    labels: Tensor  # (classes,) int64 original label of each row

    @classmethod
    def from_labels(cls, y: Tensor) -> "ClassTable":
        """The table of ``y (N,)``: classes in increasing label order, examples in dataset order."""
        labels, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)  # (C,), (N,), (C,)
        order = torch.argsort(inverse, stable=True)  # (N,) dataset indices grouped by class
        rows = inverse[order]  # (N,) class row of each position
        starts = counts.cumsum(0) - counts  # (C,) first position of each class in ``order``
        slots = torch.arange(len(y), device=y.device) - starts[rows]  # (N,) rank within its class
        index = torch.full((len(labels), int(counts.max())), -1, dtype=torch.int64, device=y.device)  # (C, max)
        index[rows, slots] = order
        return cls(index, counts, labels)

    def at_least(self, min_count: int) -> tuple["ClassTable", Tensor]:
        """The classes with at least ``min_count`` examples (trimmed to their largest), and the others' labels."""
        keep = self.counts >= min_count  # (C,)
        if not keep.any():
            return ClassTable(self.index[:0, :0], self.counts[:0], self.labels[:0]), self.labels
        width = int(self.counts[keep].max())
        return ClassTable(self.index[keep, :width], self.counts[keep], self.labels[keep]), self.labels[~keep]


class Draw(NamedTuple):
    rows: Tensor  # (tasks, n_way) rows of the class table
    slots: Tensor  # (tasks, n_way, shots) position of each example within its class
    indices: Tensor  # (tasks, n_way, shots) dataset index of each example


def draw_episodes(table: ClassTable, tasks: int, n_way: int, shots: int,
                  generator: torch.Generator | None = None) -> Draw:
    """``tasks`` episodes of ``n_way`` classes and ``shots`` examples each, with random numbers drawn on
    the generator's device (the table's without one); no Python loop over tasks or classes."""
    device = table.index.device
    key_device = generator.device if generator is not None else device
    classes, width = table.index.shape
    rows = random_subsets((tasks,), classes, n_way, generator, key_device)  # (tasks, n_way)
    keys = torch.rand(tasks, n_way, width, generator=generator, dtype=torch.float64,
                      device=key_device)  # (tasks, n_way, width) in [0, 1)
    counts = table.counts.to(key_device)[rows]  # (tasks, n_way)
    padded = torch.arange(width, device=key_device) >= counts[..., None]  # (tasks, n_way, width)
    slots = keys.masked_fill_(padded, -1.0).topk(shots, dim=-1, sorted=True).indices  # (tasks, n_way, shots)
    rows, slots = rows.to(device), slots.to(device)
    return Draw(rows, slots, table.index[rows[..., None], slots])  # indices (tasks, n_way, shots)


def episode_batch(support: Tensor, query: Tensor, example_shape: Sequence[int], info: dict) -> TaskBatch:
    """A :class:`TaskBatch` from ``support (tasks, n_way, k_shot, *shape)`` and ``query (tasks, n_way, q_query,
    *shape)``, grouped by class: ``support_y[t] = [0]*k_shot + [1]*k_shot + ...``."""
    tasks, n, k = support.shape[:3]
    q = query.shape[2]
    labels = torch.arange(n, device=support.device)  # (n_way,)
    return TaskBatch(support.reshape(tasks, n * k, *example_shape),  # (tasks, n_way*k_shot, *example_shape)
                     labels.repeat_interleave(k).repeat(tasks, 1),  # (tasks, n_way*k_shot)
                     query.reshape(tasks, n * q, *example_shape),  # (tasks, n_way*q_query, *example_shape)
                     labels.repeat_interleave(q).repeat(tasks, 1), info=info)  # (tasks, n_way*q_query)


def item_label(item: Any, where: str) -> int:
    """The label of one dataset item ``(x, label)``, or ``ValueError`` saying what was expected."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise ValueError(f"{where} must be an (x, label) pair, got {type(item).__name__}"
                         f"{f' of length {len(item)}' if isinstance(item, (tuple, list)) else ''}; a dataset "
                         "without such labels needs labels=... (one integer per example) or a .targets attribute")
    try:
        return operator.index(item[1])
    except TypeError as error:
        raise ValueError(f"the label of {where} must be an integer (int or integer scalar tensor), "
                         f"got {item[1]!r}") from error


def stack_items(items: Sequence[Any]) -> tuple[Tensor, Tensor]:
    """``[(x, label), ...]`` as ``x (B, *shape)`` and int64 ``labels (B,)``."""
    labels = torch.tensor([item_label(item, f"items[{i}]") for i, item in enumerate(items)])  # (B,)
    try:
        x = torch.stack([torch.as_tensor(item[0]) for item in items])  # (B, *shape)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError("every x of the (x, label) items must be a tensor or array of one shape "
                         f"(add a ToTensor-like transform to the dataset): {error}") from error
    return x, labels


def dataset_size(dataset: Any) -> int:
    """``len(dataset)`` of a map-style dataset, or ``ValueError`` saying what is expected."""
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise ValueError("dataset must be a map-style torch.utils.data.Dataset (with __len__ and __getitem__ "
                         f"returning (x, label)), got {type(dataset).__name__}")
    size = len(dataset)
    if size < 1:
        raise ValueError("dataset must hold at least one (x, label) example, got an empty dataset")
    return size


def dataset_labels(dataset: Any, labels: Any = None) -> Tensor:
    """``labels (N,)`` of a map-style dataset: ``labels`` if given, else ``dataset.targets`` if present, else
    one pass ``dataset[i][1]`` over the whole dataset (which loads every example once)."""
    size = dataset_size(dataset)
    name = "labels"
    if labels is None and getattr(dataset, "targets", None) is not None:
        name, labels = "dataset.targets", dataset.targets
    if labels is None:
        labels = [item_label(dataset[i], f"dataset[{i}]") for i in range(size)]
    y = label_tensor(name, labels)  # (N,)
    if len(y) != size:
        raise ValueError(f"{name} must hold one label per example: it has {len(y)} but the dataset has {size}")
    return y


@dataclass(frozen=True)
class EpisodeCollate:
    """``collate_fn`` for a DataLoader over :meth:`EpisodeSampler.batch_sampler`: a list of
    ``tasks * n_way * (k_shot + q_query)`` ``(x, label)`` items, task by task, class by class, support
    before query, becomes a :class:`TaskBatch` with labels ``0 .. n_way - 1`` and ``info["classes"]``
    ``(tasks, n_way)``, the items' own labels. Small, so it pickles cheaply into worker processes."""

    n_way: int
    k_shot: int
    q_query: int
    example_shape: tuple[int, ...] | None = None  # None: the shape of the items' x

    def __call__(self, items: Sequence[Any]) -> TaskBatch:
        n, k, shots = self.n_way, self.k_shot, self.k_shot + self.q_query
        if not isinstance(items, (list, tuple)) or not items or len(items) % (n * shots):
            raise ValueError(f"items must be a list of tasks * n_way * (k_shot + q_query) = tasks * {n * shots} "
                             f"(x, label) pairs in the order of batch_sampler, got {len(items)!r} items")
        x, labels = stack_items(items)  # (B, *shape), (B,)
        tasks = len(items) // (n * shots)
        x = x.view(tasks, n, shots, *x.shape[1:])  # (tasks, n_way, k+q, *shape)
        labels = labels.view(tasks, n, shots)  # (tasks, n_way, k+q)
        if not torch.equal(labels, labels[..., :1].expand_as(labels)):
            raise ValueError(f"items must come in runs of k_shot + q_query = {shots} examples of one class, as "
                             "batch_sampler yields them; got a run with different labels")
        shape = tuple(x.shape[3:]) if self.example_shape is None else self.example_shape
        return episode_batch(x[:, :, :k], x[:, :, k:], shape, {"classes": labels[:, :, 0]})


class EpisodeBatchSampler(Sampler[list[int]]):
    """``batches`` batches of ``tasks`` episodes, each a flat list of ``tasks * n_way * (k_shot + q_query)``
    dataset indices in :class:`EpisodeCollate`'s order, for ``DataLoader(dataset, batch_sampler=...)``
    (the role of easyfsl's ``TaskSampler`` and learn2learn's ``TaskDataset``).

    Indices are drawn in the main process by ``draw(tasks, generator)``, so workers only load and collate.
    Randomness: ``generator`` continues its stream from one epoch to the next (the same episodes as
    ``sample(tasks, generator)`` called ``batches`` times); ``seed`` restarts from that seed every epoch
    (fixed validation episodes); with neither, each epoch seeds a fresh generator from torch's global
    generator, so ``torch.manual_seed`` makes it reproducible (as ``RandomSampler`` does).
    """

    def __init__(self, draw: Callable[[int, torch.Generator], Tensor], batches: int, tasks: int = 1,
                 generator: torch.Generator | None = None, seed: int | None = None) -> None:
        check_int("batches", batches, 1, why="episode batches per epoch")
        check_int("tasks", tasks, 1, why="episodes per batch")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        if generator is not None and seed is not None:
            raise ValueError("pass generator (a stream over epochs) or seed (the same episodes every epoch), not both")
        self.draw, self.batches, self.tasks = draw, batches, tasks
        self.generator, self.seed = generator, seed

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        generator = self.generator
        if generator is None:
            seed = self.seed if self.seed is not None else int(torch.empty((), dtype=torch.int64).random_())
            generator = torch.Generator().manual_seed(seed)
        for _ in range(self.batches):
            yield self.draw(self.tasks, generator).flatten().tolist()  # tasks * n_way * (k+q) indices


__all__ = ["EpisodeBatchSampler", "EpisodeCollate", "random_subsets"]
