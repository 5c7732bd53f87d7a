"""Multi-task datasets: MultiDigits (MultiMNIST from scikit-learn's digits), GradNorm's toy regression and
Omniglot's alphabet + character + ink tasks.

The Omniglot unit tests use the small fake zips of ``omniglot_fixtures`` and a temporary ``MAPPING_CACHE``;
the integration test runs only when ``$MAPPING_DATA/omniglot`` holds the real files, and reads and fills the
cache that ``MAPPING_CACHE`` names, so that a warm cache keeps it fast.
"""
from __future__ import annotations

import math
import time

import pytest
import torch
from torch.utils.data import DataLoader

from mapping.data.multidigits import MultiDigits, digit_split, load_digits
from mapping.data.multitask_toys import PAPER_SIGMAS, TEN_SIGMAS, MultiTaskDataset, gradnorm_toy
from mapping.data.omniglot import load_omniglot
from mapping.data.omniglot_multitask import omniglot_multitask
from omniglot_fixtures import requires_real

# ----------------------------------------------------------------------------------------- MultiDigits


@pytest.fixture(scope="module")
def digits() -> dict[str, MultiDigits]:
    return {"train": MultiDigits("train"), "test": MultiDigits("test")}


def test_multidigits_shapes_dtypes_and_ranges(digits):
    train, test = digits["train"], digits["test"]
    assert train.x.shape == (10_000, 1, 12, 12) and test.x.shape == (2_000, 1, 12, 12) and train.canvas == 12
    assert train.x.dtype == torch.float32 and 0.0 <= train.x.min() and train.x.max() <= 1.0
    assert train.y.shape == (10_000, 2) and train.y.dtype == torch.int64
    assert set(train.y.unique().tolist()) == set(range(10))
    assert train.tasks == ("left", "right") and train.source.shape == (10_000, 2)
    assert MultiDigits(pairs=7, shift=3, margin=0).x.shape == (7, 1, 11, 11)


def test_multidigits_labels_are_the_source_digits_labels(digits):
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.max() == 1.0
    for d in digits.values():
        assert torch.equal(d.y, labels[d.source])
        assert torch.equal(d.targets["left"], d.y[:, 0]) and torch.equal(d.targets["right"], d.y[:, 1])
        left, right = images[d.source[:, 0]], images[d.source[:, 1]]  # (N, 8, 8)
        canvas = torch.zeros(len(d), 12, 12)
        canvas[:, 1:9, 1:9] = left
        canvas[:, 3:11, 3:11] = torch.maximum(canvas[:, 3:11, 3:11], right)
        assert torch.equal(d.x[:, 0], canvas)
        # the left digit alone where the right one does not reach (its top two rows and left two columns)
        assert torch.equal(d.x[:, 0, 1:3, 1:9], left[:, :2]) and torch.equal(d.x[:, 0, 1:9, 1:3], left[:, :, :2])
        assert torch.equal(d.x[:, 0, 9:11, 3:11], right[:, 6:]) and torch.equal(d.x[:, 0, 3:11, 9:11], right[:, :, 6:])


def test_multidigits_train_and_test_digits_are_disjoint(digits):
    train, test = digits["train"], digits["test"]
    assert set(train.pool.tolist()).isdisjoint(test.pool.tolist())
    assert len(train.pool) + len(test.pool) == 1797 and (len(train.pool), len(test.pool)) == (1347, 450)
    assert set(train.source.flatten().tolist()) <= set(train.pool.tolist())
    assert set(test.source.flatten().tolist()) <= set(test.pool.tolist())
    other = MultiDigits("test", seed=5)  # another pairing seed: the same digit split
    assert torch.equal(other.pool, test.pool)
    assert set(other.source.flatten().tolist()).isdisjoint(train.pool.tolist())
    _, labels = load_digits()
    share = torch.bincount(labels[test.pool], minlength=10) / torch.bincount(labels, minlength=10)  # (10,)
    assert ((share - 0.25).abs() < 0.01).all()  # stratified


def test_multidigits_class_balance_and_equal_use_of_images(digits):
    for d in digits.values():
        for position in range(2):
            share = torch.bincount(d.y[:, position], minlength=10) / len(d)  # (10,)
            assert ((share - 0.1).abs() < 0.01).all(), share
            uses = torch.bincount(d.source[:, position], minlength=1797)[d.pool]  # (images,)
            assert uses.max() - uses.min() <= 1


def test_multidigits_deterministic_given_seed(digits):
    again = MultiDigits("train")
    assert torch.equal(again.x, digits["train"].x) and torch.equal(again.source, digits["train"].source)
    assert not torch.equal(MultiDigits("train", seed=1).source, again.source)
    assert not torch.equal(digit_split(split_seed=1)["test"], digit_split(split_seed=0)["test"])


def test_multidigits_is_a_libmtl_style_dataset(digits):
    d = digits["train"]
    x, y = d[3]
    assert torch.equal(x, d.x[3]) and y == {"left": d.y[3, 0], "right": d.y[3, 1]}
    xb, yb = next(iter(DataLoader(d, batch_size=5)))
    assert xb.shape == (5, 1, 12, 12) and set(yb) == {"left", "right"} and torch.equal(yb["right"], d.y[:5, 1])


def test_multidigits_builds_well_under_a_second():
    load_digits()  # scikit-learn's one-time import and read, not the build
    start = time.perf_counter()
    MultiDigits("train")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("kwargs, name", [
    ({"split": "val"}, "split"), ({"pairs": 0}, "pairs"), ({"pairs": 2.5}, "pairs"), ({"pairs": True}, "pairs"),
    ({"seed": -1}, "seed"), ({"seed": "0"}, "seed"), ({"shift": 0}, "shift"), ({"shift": 8}, "shift"),
    ({"shift": True}, "shift"), ({"margin": -1}, "margin"), ({"test_fraction": 0.0}, "test_fraction"),
    ({"test_fraction": 1.0}, "test_fraction"), ({"test_fraction": 1}, "test_fraction"),
    ({"test_fraction": 0.001}, "test_fraction"), ({"split_seed": -2}, "split_seed"),
])
def test_multidigits_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MultiDigits(**kwargs)


# ----------------------------------------------------------------------------------- GradNorm's toy

def test_gradnorm_toy_shapes_and_formula():
    toy = gradnorm_toy(train=300, test=200)
    assert toy.tasks == ("task0", "task1") and toy.B.shape == (100, 250) and toy.epsilon.shape == (2, 100, 250)
    assert torch.equal(toy.sigma, torch.tensor([1.0, 100.0]))
    assert toy.train.x.shape == (300, 250) and toy.test.x.shape == (200, 250)
    for data in (toy.train, toy.test):
        assert torch.allclose(data.x.norm(dim=1), torch.ones(len(data)))  # unit-norm inputs
        for i, sigma in enumerate(toy.sigma.tolist()):
            y = data.targets[f"task{i}"]  # (N, 100)
            assert y.shape == (len(data), 100) and y.dtype == torch.float32
            expected = sigma * torch.tanh(data.x @ (toy.B + toy.epsilon[i]).T)  # (N, 100)
            assert torch.allclose(y, expected, rtol=1e-5, atol=1e-5 * sigma)
            assert y.abs().max() <= sigma and y.abs().max() > 0.99 * sigma


def test_gradnorm_toy_scales_and_constants():
    assert PAPER_SIGMAS == (1.0, 100.0)
    assert len(TEN_SIGMAS) == 10 and TEN_SIGMAS[0] == 1.0 and math.isclose(TEN_SIGMAS[-1], 100.0)
    ratios = [b / a for a, b in zip(TEN_SIGMAS, TEN_SIGMAS[1:])]
    assert all(math.isclose(r, 10 ** (2 / 9)) for r in ratios)  # log-spaced over two orders of magnitude
    toy = gradnorm_toy(TEN_SIGMAS, train=500, test=10)
    spread = torch.stack([toy.train.targets[t].std() for t in toy.tasks])  # (10,)
    assert torch.allclose(spread / spread[0], toy.sigma, rtol=0.05)  # statistically identical up to sigma_i
    assert abs(toy.B.std().item() - math.sqrt(10)) < 0.05 and abs(toy.epsilon.std().item() - math.sqrt(3.5)) < 0.02
    assert abs(toy.B.mean().item()) < 0.05 and abs(toy.epsilon.mean().item()) < 0.02
    theirs = gradnorm_toy(train=10, test=10, b_std=10.0, eps_std=3.5, normalise=False)
    assert abs(theirs.B.std().item() - 10) < 0.2 and -1 <= theirs.train.x.min() and theirs.train.x.max() <= 1
    assert theirs.train.x.norm(dim=1).min() > 2  # not normalised


def test_gradnorm_toy_seeds():
    a, b = gradnorm_toy(train=20, test=30), gradnorm_toy(train=20, test=30)
    assert torch.equal(a.B, b.B) and torch.equal(a.train.x, b.train.x) and torch.equal(a.test.targets["task1"],
                                                                                       b.test.targets["task1"])
    c = gradnorm_toy(train=20, test=30, seed=1)
    assert not torch.equal(a.B, c.B) and not torch.equal(a.train.x, c.train.x)
    assert torch.equal(gradnorm_toy(train=5, test=30).test.x, a.test.x)  # test inputs do not move with train


def test_gradnorm_toy_default_size_and_speed():
    start = time.perf_counter()
    toy = gradnorm_toy()
    assert time.perf_counter() - start < 5.0
    assert len(toy.train) == 10_000 and len(toy.test) == 2_000
    x, y = toy.train[0]
    assert x.shape == (250,) and set(y) == {"task0", "task1"} and y["task1"].shape == (100,)


@pytest.mark.parametrize("kwargs, name", [
    ({"sigmas": ()}, "sigmas"), ({"sigmas": (0.0,)}, "sigmas"), ({"sigmas": (1.0, -1.0)}, "sigmas"),
    ({"sigmas": (math.nan,)}, "sigmas"), ({"sigmas": (math.inf,)}, "sigmas"), ({"sigmas": "12"}, "sigmas"),
    ({"sigmas": (True,)}, "sigmas"), ({"train": 0}, "train"), ({"test": 1.5}, "test"), ({"inputs": 0}, "inputs"),
    ({"outputs": -3}, "outputs"), ({"seed": -1}, "seed"), ({"b_std": -1.0}, "b_std"),
    ({"b_std": math.inf}, "b_std"), ({"eps_std": math.nan}, "eps_std"), ({"normalise": 1}, "normalise"),
])
def test_gradnorm_toy_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        gradnorm_toy(**kwargs)


def test_multitask_dataset_checks_lengths():
    with pytest.raises(ValueError, match=r"targets\['b'\]"):
        MultiTaskDataset(torch.zeros(3, 2), {"a": torch.zeros(3), "b": torch.zeros(2)})
    with pytest.raises(ValueError, match="targets"):
        MultiTaskDataset(torch.zeros(3, 2), {})


# ------------------------------------------------------------------------------ Omniglot multitask

def check_omniglot_multitask(train, test, split, train_drawers: int) -> None:
    """Everything that holds for any Omniglot set: labels, drawers, ink."""
    characters = split.num_classes
    assert len(train) == characters * train_drawers and len(test) == characters * (20 - train_drawers)
    assert train.tasks == test.tasks == ("alphabet", "character", "ink")
    for d, drawers in ((train, range(train_drawers)), (test, range(train_drawers, 20))):
        c, k = d.targets["character"], d.drawer
        assert set(k.tolist()) == set(drawers)
        assert torch.equal(c, torch.arange(characters).repeat_interleave(len(drawers)))  # character-major
        assert torch.equal(d.x[:, 0], split.images[c, k])  # each example is the drawing it says it is
        assert torch.equal(d.targets["alphabet"], split.alphabet_index[c])
        assert torch.equal(d.character_ids, split.character_ids[c])
        ink = d.targets["ink"]
        assert ink.shape == (len(d), 1) and ink.dtype == torch.float32
        assert torch.allclose(ink[:, 0], d.x.sum((1, 2, 3)))  # raw pixels of ink
        assert d.num_classes == {"alphabet": len(split.alphabets), "character": characters}
    assert set(train.drawer.tolist()).isdisjoint(test.drawer.tolist())


def test_omniglot_multitask_on_fake_zips(fake_root, fake_cache):
    split = load_omniglot("background", fake_root, strict=False)
    train = omniglot_multitask("train", root=fake_root, strict=False)
    test = omniglot_multitask("test", root=fake_root, strict=False)
    check_omniglot_multitask(train, test, split, 15)
    assert train.targets["alphabet"].unique().tolist() == [0, 1, 2]
    ink = split.images[:, :15].sum((-2, -1))  # (characters, 15)
    assert math.isclose(train.ink_mean, ink.mean().item(), rel_tol=1e-6)
    assert math.isclose(test.ink_std, ink.std().item(), rel_tol=1e-6)  # both splits keep the training statistics
    standard = omniglot_multitask("test", root=fake_root, strict=False, standardise=True)
    assert torch.allclose(standard.targets["ink"], (test.targets["ink"] - train.ink_mean) / train.ink_std)
    fewer = omniglot_multitask("test", train_drawers=19, root=fake_root, strict=False)
    assert fewer.drawer.unique().tolist() == [19] and len(fewer) == 12


@pytest.mark.parametrize("kwargs, name", [
    ({"split": "val"}, "split"), ({"train_drawers": 0}, "train_drawers"), ({"train_drawers": 20}, "train_drawers"),
    ({"train_drawers": 1.5}, "train_drawers"), ({"train_drawers": True}, "train_drawers"),
    ({"standardise": "yes"}, "standardise"),
])
def test_omniglot_multitask_bad_arguments(kwargs, name, fake_root, fake_cache):
    with pytest.raises(ValueError, match=name):
        omniglot_multitask(**{"root": fake_root, "strict": False, **kwargs})




@requires_real
def test_real_omniglot_multitask():
    split = load_omniglot("background")
    train, test = omniglot_multitask("train"), omniglot_multitask("test")
    check_omniglot_multitask(train, test, split, 15)
    assert train.num_classes == {"alphabet": 30, "character": 964} and len(train.alphabets) == 30
    assert train.x.shape == (14_460, 1, 28, 28) and test.x.shape == (4_820, 1, 28, 28)
    ink = train.targets["ink"]
    assert 50 < ink.mean() < 80 and 15 < ink.std() < 35  # documented: 64 and 23 pixels
    assert ink.var() > 50 * math.log(964)  # the regression loss is orders of magnitude above the cross-entropies
    standard = omniglot_multitask("train", standardise=True).targets["ink"]
    assert abs(standard.mean().item()) < 1e-4 and abs(standard.std().item() - 1) < 1e-4
