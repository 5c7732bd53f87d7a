"""The general episode sampler: the old (classes, examples) algorithm reproduced draw for draw, labelled tensors
with uneven and skipped classes, map-style datasets, the DataLoader form (0 and 2 workers), and bad input.

Examples encode their own dataset index (``x[i] = i``), so every check is by construction."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from mapping.data import EpisodeBatchSampler, EpisodeCollate, EpisodeSampler, TaskBatch
from mapping.data.sampler import random_subsets


# ------------------------------------------------------------------ the reference: today's algorithm, verbatim

def reference_sample(images, n_way, k_shot, q_query, tasks, generator=None, channel=None):
    """``EpisodeSampler.sample`` before the general sampler (commit 064a8a1), copied verbatim as a function."""
    channel = images.dim() == 4 if channel is None else channel
    example_shape = (1, *images.shape[2:]) if channel else tuple(images.shape[2:])
    n, k, q = n_way, k_shot, q_query
    classes, examples = images.shape[:2]
    device = images.device
    key_device = generator.device if generator is not None else device
    chosen = random_subsets((tasks,), classes, n, generator, key_device).to(device)  # (tasks, n_way)
    picks = random_subsets((tasks, n), examples, k + q, generator, key_device).to(device)  # (tasks, n_way, k+q)
    rows = chosen[:, :, None]  # (tasks, n_way, 1)
    support_x = images[rows, picks[:, :, :k]]  # (tasks, n_way, k_shot, *shape), one copy each
    query_x = images[rows, picks[:, :, k:]]  # (tasks, n_way, q_query, *shape)
    support_x = support_x.reshape(tasks, n * k, *example_shape)  # (tasks, n_way*k_shot, *example_shape)
    query_x = query_x.reshape(tasks, n * q, *example_shape)  # (tasks, n_way*q_query, *example_shape)
    labels = torch.arange(n, device=device)  # (n_way,)
    support_y = labels.repeat_interleave(k).repeat(tasks, 1)  # (tasks, n_way*k_shot)
    query_y = labels.repeat_interleave(q).repeat(tasks, 1)  # (tasks, n_way*q_query)
    info = {"classes": chosen, "support_examples": picks[:, :, :k], "query_examples": picks[:, :, k:]}
    return TaskBatch(support_x, support_y, query_x, query_y, info=info)


def same_batch(a: TaskBatch, b: TaskBatch, keys=("classes",)) -> None:
    for name, u, v in zip(("support_x", "support_y", "query_x", "query_y"), a.tensors(), b.tensors()):
        assert u.shape == v.shape and u.dtype == v.dtype and torch.equal(u, v), name
    for key in keys:
        assert torch.equal(a.info[key], b.info[key]), key


@pytest.mark.parametrize("shape, n, k, q, tasks, channel", [
    ((30, 20, 28, 28), 5, 1, 15, 32, None), ((30, 20, 28, 28), 20, 5, 15, 3, False),
    ((12, 20, 5), 5, 2, 3, 7, None), ((7, 4, 1), 7, 1, 3, 5, None), ((9, 6, 2, 3, 2), 3, 2, 4, 4, True),
    ((4800, 20, 3), 60, 5, 5, 2, None)])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_images_form_draws_exactly_as_before(shape, n, k, q, tasks, channel, seed):
    images = torch.rand(*shape)
    new = EpisodeSampler(images, n, k, q, channel=channel).sample(tasks, torch.Generator().manual_seed(seed))
    old = reference_sample(images, n, k, q, tasks, torch.Generator().manual_seed(seed), channel)
    same_batch(new, old, keys=("classes", "support_examples", "query_examples"))


def test_images_form_without_generator_follows_the_global_seed():
    images = torch.rand(10, 20, 28, 28)
    torch.manual_seed(3)
    new = EpisodeSampler(images, 5, 1, 5).sample(4)
    torch.manual_seed(3)
    same_batch(new, reference_sample(images, 5, 1, 5, 4))


def test_images_form_is_from_labels_on_the_flattened_table():
    """Omniglot's sampler is one use of the general one: the same episodes as labelled tensors."""
    images = torch.rand(15, 20, 28, 28)
    a = EpisodeSampler(images, 5, 2, 3, channel=False).sample(6, torch.Generator().manual_seed(0))
    flat = EpisodeSampler.from_labels(images.flatten(0, 1), torch.arange(15).repeat_interleave(20), 5, 2, 3)
    b = flat.sample(6, torch.Generator().manual_seed(0))
    same_batch(a, b, keys=("classes", "support_examples", "query_examples", "support_indices", "query_indices"))
    rows, slots = a.info["classes"][..., None], a.info["support_examples"]  # (6, 5, 1), (6, 5, 2)
    assert torch.equal(a.info["support_indices"], rows * 20 + slots)  # the flat index of (class, example)


# ------------------------------------------------------------------ labelled tensors

def id_data(sizes, labels=None, width=3):
    """``x (N, width)`` with ``x[i] = i`` and ``y (N,)`` holding ``labels[c]`` ``sizes[c]`` times, shuffled."""
    labels = list(range(len(sizes))) if labels is None else labels
    y = torch.tensor([l for l, s in zip(labels, sizes) for _ in range(s)])  # (N,)
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(99))]  # classes interleaved
    x = torch.arange(len(y), dtype=torch.float32)[:, None].expand(-1, width).clone()  # (N, width)
    return x, y


def check_episodes(batch: TaskBatch, y: torch.Tensor, n, k, q) -> None:
    """Labels grouped 0..n-1, examples from the right classes, no example twice, info consistent."""
    tasks = batch.num_tasks
    assert torch.equal(batch.support_y, torch.arange(n).repeat_interleave(k).repeat(tasks, 1))
    assert torch.equal(batch.query_y, torch.arange(n).repeat_interleave(q).repeat(tasks, 1))
    s_ids, q_ids = batch.support_x.flatten(2)[:, :, 0].long(), batch.query_x.flatten(2)[:, :, 0].long()  # (tasks, n*k)
    assert torch.equal(s_ids, batch.info["support_indices"].flatten(1))
    assert torch.equal(q_ids, batch.info["query_indices"].flatten(1))
    classes = batch.info["classes"]  # (tasks, n) original labels
    assert torch.equal(y[s_ids], classes.gather(1, batch.support_y))  # label j <-> classes[:, j]
    assert torch.equal(y[q_ids], classes.gather(1, batch.query_y))
    every = torch.cat([s_ids, q_ids], 1).sort(1).values  # (tasks, n*(k+q))
    assert every.diff(dim=1).ne(0).all()  # support and query disjoint, no repeats
    assert classes.sort(1).values.diff(dim=1).ne(0).all()  # distinct classes per task


def test_from_labels_any_label_values_and_shapes():
    x, y = id_data([6, 7, 5, 9, 6], labels=[40, -3, 7, 1000, 2])
    sampler = EpisodeSampler.from_labels(x.view(-1, 3, 1), y, 4, 2, 3)
    batch = sampler.sample(50, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (50, 8, 3, 1) and batch.query_x.shape == (50, 12, 3, 1)
    assert batch.support_y.dtype == torch.int64 and batch.info["classes"].shape == (50, 4)
    check_episodes(batch, y, 4, 2, 3)
    assert set(batch.info["classes"].unique().tolist()) == {40, -3, 7, 1000, 2}
    assert sampler.classes.tolist() == [-3, 2, 7, 40, 1000] and sampler.skipped_classes.numel() == 0
    positions = batch.info["support_examples"]  # (tasks, n, k) rank within the class, in dataset order
    for t, j in [(0, 0), (3, 2), (49, 3)]:
        members = (y == batch.info["classes"][t, j]).nonzero()[:, 0]  # (count,)
        assert torch.equal(members[positions[t, j]], batch.info["support_indices"][t, j])


def test_uneven_classes_never_draw_padding_and_draw_uniformly():
    sizes = [3, 40, 5, 3, 12, 4]
    x, y = id_data(sizes)
    sampler = EpisodeSampler.from_labels(x, y, 6, 1, 2)
    assert sampler.table.index.shape == (6, 40) and (sampler.table.index == -1).sum() == 6 * 40 - sum(sizes)
    batch = sampler.sample(3000, torch.Generator().manual_seed(1))
    check_episodes(batch, y, 6, 1, 2)
    slots = torch.cat([batch.info["support_examples"], batch.info["query_examples"]], -1)  # (tasks, 6, 3)
    counts = torch.tensor(sizes)[batch.info["classes"]]  # (tasks, 6)
    assert (slots < counts[..., None]).all()  # never a padded slot
    drawn = torch.bincount(torch.cat([batch.info["support_indices"].flatten(), batch.info["query_indices"].flatten()]),
                           minlength=len(y))  # (N,) times each example was drawn
    expected = 3000 * 3 / torch.tensor(sizes)[y]  # (N,) every task draws 3 of its class's examples
    assert ((drawn - expected).abs() <= 5 * expected.sqrt() + 5).all()  # uniform within each class


def test_small_classes_are_skipped_and_never_drawn():
    x, y = id_data([2, 8, 1, 6, 4, 5], labels=[10, 11, 12, 13, 14, 15])
    sampler = EpisodeSampler.from_labels(x, y, 3, 2, 3)
    assert sampler.skipped_classes.tolist() == [10, 12, 14] and sampler.classes.tolist() == [11, 13, 15]
    assert sampler.table.index.shape == (3, 8)  # trimmed to the largest usable class
    batch = sampler.sample(200, torch.Generator().manual_seed(2))
    check_episodes(batch, y, 3, 2, 3)
    assert set(batch.info["classes"].unique().tolist()) == {11, 13, 15}
    assert "skipped_classes=3" in repr(sampler) and "examples=5..8" in repr(sampler)


def test_seeds_reproduce_and_differ():
    x, y = id_data([5, 9, 6, 7, 8])
    sampler = EpisodeSampler.from_labels(x, y, 3, 2, 2)
    a, b, c = (sampler.sample(5, torch.Generator().manual_seed(s)) for s in (7, 7, 8))
    same_batch(a, b, keys=("classes", "support_indices", "query_indices"))
    assert not torch.equal(a.support_x, c.support_x)
    g = torch.Generator().manual_seed(7)
    first, second = sampler.sample_indices(5, g), sampler.sample_indices(5, g)  # (5, 3, 4) each
    assert torch.equal(first, torch.cat([a.info["support_indices"], a.info["query_indices"]], -1))
    assert not torch.equal(first, second)


# ------------------------------------------------------------------ map-style datasets

class Items(Dataset):
    """``(x, label)`` items with optional ``targets``; counts its loads."""

    def __init__(self, x, y, targets=False, label=int):
        self.x, self.y, self.loads, self.label = x, y, 0, label
        if targets:
            self.targets = y.tolist()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        self.loads += 1
        return self.x[i], self.label(self.y[i])


@pytest.mark.parametrize("how", ["one pass", "targets", "labels"])
def test_dataset_path_equals_tensor_path(how):
    x, y = id_data([4, 9, 6, 2, 7], labels=[5, 1, 9, 3, 0])
    data = Items(x, y, targets=how == "targets")
    sampler = EpisodeSampler.from_dataset(data, 3, 1, 3, labels=y.numpy() if how == "labels" else None)
    assert data.loads == (len(y) if how == "one pass" else 0)
    assert sampler.skipped_classes.tolist() == [3] and sampler.source is data
    a = sampler.sample(9, torch.Generator().manual_seed(4))
    b = EpisodeSampler.from_labels(x, y, 3, 1, 3).sample(9, torch.Generator().manual_seed(4))
    same_batch(a, b, keys=("classes", "support_examples", "query_examples", "support_indices", "query_indices"))
    check_episodes(a, y, 3, 1, 3)


def test_tensor_dataset_labels_by_one_pass():
    x, y = id_data([5, 5, 5])
    sampler = EpisodeSampler.from_dataset(TensorDataset(x, y), 2, 2, 2)  # 0-dim tensor labels
    same_batch(sampler.sample(3, torch.Generator().manual_seed(0)),
               EpisodeSampler.from_labels(x, y, 2, 2, 2).sample(3, torch.Generator().manual_seed(0)))


def test_dataset_labels_that_disagree_with_the_items_are_caught():
    x, y = id_data([5, 5, 5])
    sampler = EpisodeSampler.from_dataset(Items(x, y), 2, 1, 1, labels=(y + 1) % 3)
    with pytest.raises(ValueError, match="labels"):
        sampler.sample(2, torch.Generator().manual_seed(0))


# ------------------------------------------------------------------ DataLoader form

def loader_batches(sampler, workers, **kwargs):
    loader = DataLoader(sampler.source, batch_sampler=sampler.batch_sampler(**kwargs), collate_fn=sampler.collate,
                        num_workers=workers)
    return list(loader)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("form", ["labels", "dataset", "images"])
def test_dataloader_equals_sample(form, workers):
    x, y = id_data([6, 9, 7, 5, 8], labels=[3, 8, 1, 6, 2])
    if form == "images":
        sampler = EpisodeSampler(torch.rand(8, 6, 5, 5), 4, 2, 3)  # channel: (1, 5, 5) examples
        y = torch.arange(8).repeat_interleave(6)
    elif form == "dataset":
        sampler = EpisodeSampler.from_dataset(Items(x, y, targets=True), 4, 2, 3)
    else:
        sampler = EpisodeSampler.from_labels(x, y, 4, 2, 3)
    batches = loader_batches(sampler, workers, batches=3, tasks=2, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    assert len(batches) == 3
    for batch in batches:
        assert isinstance(batch, TaskBatch) and batch.num_tasks == 2
        same_batch(batch, sampler.sample(2, g))
        if form != "images":  # x encodes its index: the items' labels are the classes in info
            assert torch.equal(y[batch.support_x[..., 0].long()], batch.info["classes"].gather(1, batch.support_y))
            assert torch.equal(y[batch.query_x[..., 0].long()], batch.info["classes"].gather(1, batch.query_y))


def test_batch_sampler_seeding():
    x, y = id_data([6, 6, 6, 6])
    sampler = EpisodeSampler.from_labels(x, y, 2, 1, 1)
    fixed = sampler.batch_sampler(4, tasks=3, seed=11)
    assert len(fixed) == 4 and isinstance(fixed, EpisodeBatchSampler)
    first, again = list(fixed), list(fixed)
    assert first == again and len(first[0]) == 3 * 2 * 2  # seed: the same episodes every epoch
    stream = sampler.batch_sampler(4, tasks=3, generator=torch.Generator().manual_seed(11))
    assert list(stream) == first and list(stream) != first  # generator: the stream goes on
    torch.manual_seed(0)
    a = list(sampler.batch_sampler(4, tasks=3))
    torch.manual_seed(0)
    assert list(sampler.batch_sampler(4, tasks=3)) == a  # neither: follows torch.manual_seed
    assert list(sampler.batch_sampler(4, tasks=3)) != a


def test_collate_works_on_its_own():
    collate = EpisodeCollate(2, 1, 2)
    items = [(torch.full((2,), float(i)), label) for i, label in enumerate([7, 7, 7, 4, 4, 4])]
    batch = collate(items)
    assert batch.support_x[..., 0].tolist() == [[0, 3]] and batch.query_x[..., 0].tolist() == [[1, 2, 4, 5]]
    assert batch.support_y.tolist() == [[0, 1]] and batch.query_y.tolist() == [[0, 0, 1, 1]]
    assert batch.info["classes"].tolist() == [[7, 4]]


# ------------------------------------------------------------------ bad input

X, Y = id_data([5, 5, 5, 2])


@pytest.mark.parametrize("args, match", [
    ((X.numpy(), Y, 2, 1, 1), r"x must be a tensor of examples of shape \(N, \*shape\)"),
    ((torch.tensor(1.0), Y, 2, 1, 1), "x must be a tensor"),
    ((X, Y.tolist(), 2, 1, 1), r"y must be a 1-D integer torch.Tensor"),
    ((X, Y.float(), 2, 1, 1), r"y must be a 1-D integer tensor of labels \(N,\), got dtype torch.float32"),
    ((X, Y > 1, 2, 1, 1), "y must be a 1-D integer tensor.*torch.bool"),
    ((X, Y[None], 2, 1, 1), r"y must be a 1-D integer tensor.*shape \(1, 17\)"),
    ((X[:0], Y[:0], 2, 1, 1), "y must hold at least one label"),
    ((X[:-1], Y, 2, 1, 1), r"x and y must hold the same number of examples: x has shape \(16, 3\)"),
    ((X, Y, 0, 1, 1), r"n_way must be an int in \[1, 4\]"),
    ((X, Y, 5, 1, 1), r"n_way must be an int in \[1, 4\] \(the labels name 4 classes\), got 5"),
    ((X, Y, 2.0, 1, 1), "n_way"),
    ((X, Y, 2, 0, 1), r"k_shot must be an int in \[1, 5\]"),
    ((X, Y, 2, 6, 1), r"k_shot must be an int in \[1, 5\] \(the largest class has 5 examples\)"),
    ((X, Y, 2, True, 1), "k_shot"),
    ((X, Y, 2, 1, 0), r"q_query must be an int in \[1, 5\]"),
    ((X, Y, 2, 3, 3), r"k_shot \+ q_query must be at most 5"),
    ((X, Y, 4, 2, 1), r"n_way=4 needs 4 classes with at least k_shot \+ q_query = 3 examples, but only 3 of the 4"),
])
def test_from_labels_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        EpisodeSampler.from_labels(*args)


class NoLabels(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(2)


class Stream(IterableDataset):
    def __iter__(self):
        return iter([])


@pytest.mark.parametrize("dataset, labels, match", [
    (NoLabels(), None, r"dataset\[0\] must be an \(x, label\) pair.*labels=\.\.\..*\.targets"),
    (Items(X, Y, label=float), None, r"the label of dataset\[0\] must be an integer"),
    (Stream(), None, "dataset must be a map-style torch.utils.data.Dataset"),
    (object(), None, r"dataset must be a map-style"),
    (Items(X[:0], Y[:0]), None, "dataset must hold at least one"),
    (Items(X, Y), Y[:-1], "labels must hold one label per example: it has 16 but the dataset has 17"),
    (Items(X, Y), Y.float(), "labels must be a 1-D integer tensor"),
    (Items(X, Y), "abc", "labels must be a 1-D integer tensor"),
])
def test_from_dataset_rejects(dataset, labels, match):
    with pytest.raises(ValueError, match=match):
        EpisodeSampler.from_dataset(dataset, 2, 1, 1, labels=labels)


def test_bad_targets_and_items_are_named():
    data = Items(X, Y)
    data.targets = [0.5] * len(Y)
    with pytest.raises(ValueError, match="dataset.targets must be a 1-D integer tensor"):
        EpisodeSampler.from_dataset(data, 2, 1, 1)
    sampler = EpisodeSampler.from_dataset(Items([object()] * len(Y), Y), 2, 1, 1, labels=Y)  # not tensors
    with pytest.raises(ValueError, match=r"every x of the \(x, label\) items must be a tensor"):
        sampler.sample(1)


def test_sampling_and_loader_arguments_are_checked():
    sampler = EpisodeSampler.from_labels(X, Y, 2, 1, 1)
    for call in (lambda: sampler.sample(0), lambda: sampler.sample(1.5), lambda: sampler.sample_indices(-1)):
        with pytest.raises(ValueError, match=r"tasks must be an int >= 1"):
            call()
    for kwargs, match in [(dict(batches=0), r"batches must be an int >= 1"), (dict(batches=2, tasks=0), "tasks"),
                          (dict(batches=2, seed=1.5), "seed must be an int"),
                          (dict(batches=2, generator=3), "generator must be a torch.Generator"),
                          (dict(batches=2, seed=1, generator=torch.Generator()), "not both")]:
        with pytest.raises(ValueError, match=match):
            sampler.batch_sampler(**kwargs)
    collate = sampler.collate
    with pytest.raises(ValueError, match=r"items must be a list of tasks \* n_way \* \(k_shot \+ q_query\)"):
        collate([(X[0], 0)] * 3)
    with pytest.raises(ValueError, match="runs of k_shot"):
        collate([(X[0], 0), (X[1], 1), (X[2], 1), (X[3], 1)])
    with pytest.raises(ValueError, match=r"items\[1\] must be an \(x, label\) pair"):
        collate([(X[0], 0), X[1], (X[2], 1), (X[3], 1)])
