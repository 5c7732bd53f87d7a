"""MultiDigits: MultiMNIST made small, from scikit-learn's bundled 8x8 digits (no download).

MultiMNIST (Sabour, Frosst & Hinton 2017, "Dynamic routing between capsules", §6) overlays two MNIST
digits; Sener & Koltun 2018 ("Multi-task learning as multi-objective optimization", NeurIPS, MultiMNIST
experiment) made it a two-task problem: classify the top-left digit and the bottom-right digit. Their
released loader (isl-org/MultiObjectiveOptimization, ``multi_mnist_loader.py``) puts the 28x28 left
digit at (0, 0) and the right digit at (6, 6) of a 36x36 canvas, takes the pixel-wise max where they
overlap, and resizes to 28x28; the right digit may have the same class.

Here the digits are ``sklearn.datasets.load_digits`` (1797 images, 8x8, values 0-16, scaled to [0, 1]),
whose ink fills all 8 rows and about 6 columns. The left digit is placed at ``(margin, margin)``, the
right one at ``(margin + shift, margin + shift)``, on a ``(8 + shift + 2 margin)``-pixel square canvas;
pixel-wise max where they overlap. Defaults ``shift=2, margin=1``: a 12x12 canvas, the digits' 8x8 boxes
overlap on 6x6 (56%; MultiMNIST's 28x28 boxes: 22x22, 62%) and their ink boxes on about half (MultiMNIST:
about 40-50%); the shift is 25% of the digit's size (MultiMNIST: 6/28 = 21%). No resizing.

Train and test pairs come from disjoint digit images: the 1797 are split first, stratified by class
(``test_fraction=0.25`` of each class, rounded, to test: 1347 train and 450 test images), with ``split_seed``. Within
a split, left and right images run through independent seeded sequences of random permutations of the
split's images, so each image is a left (and a right) digit equally often, up to one, and both positions
are class-balanced to the split's proportions. As in Sener & Koltun, the two classes may coincide.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_int
from ..device import generator
from .multitask_toys import MultiTaskDataset

DIGIT = 8  # side of a scikit-learn digit, pixels
CLASSES = 10
PAIRS = {"train": 10_000, "test": 2_000}  # default number of pairs per split


class MultiDigits(MultiTaskDataset):
    """Pairs of overlaid digits; items are ``(x (1, H, W), {"left": y0, "right": y1})``.

    ``x (N, 1, H, W)`` float32 in [0, 1]; ``y (N, 2)`` int64, the left and right classes; ``source (N, 2)``
    int64, the indices of the two digits in ``sklearn.datasets.load_digits()``; ``pool (n,)`` the indices of
    this split's source images. ``targets`` is ``{"left": y[:, 0], "right": y[:, 1]}``.
    """

    def __init__(self, split: str = "train", *, pairs: int | None = None, seed: int = 0, shift: int = 2,
                 margin: int = 1, test_fraction: float = 0.25, split_seed: int = 0) -> None:
        if split not in PAIRS:
            raise ValueError(f"split must be one of {sorted(PAIRS)}, got {split!r}")
        pairs = PAIRS[split] if pairs is None else pairs
        check_int("pairs", pairs, 1)
        check_int("seed", seed, 0)
        if isinstance(shift, bool) or not isinstance(shift, int) or not 1 <= shift < DIGIT:
            raise ValueError(f"shift must be an int in 1..{DIGIT - 1} so that the digits overlap partly, got {shift!r}")
        check_int("margin", margin, 0)
        images, labels = load_digits()  # (1797, 8, 8), (1797,)
        self.pool = digit_split(test_fraction, split_seed)[split]  # (n,) indices into load_digits()
        g = generator(seed, 0)
        self.source = torch.stack([_cycle(self.pool, pairs, g), _cycle(self.pool, pairs, g)], 1)  # (N, 2)
        self.y = labels[self.source]  # (N, 2)
        self.shift, self.margin = shift, margin
        x = overlay(images[self.source[:, 0]], images[self.source[:, 1]], shift, margin)  # (N, H, W)
        super().__init__(x[:, None], {"left": self.y[:, 0], "right": self.y[:, 1]})  # x (N, 1, H, W)

    @property
    def canvas(self) -> int:
        return DIGIT + self.shift + 2 * self.margin


def overlay(left: Tensor, right: Tensor, shift: int = 2, margin: int = 1) -> Tensor:
    """``left`` at ``(margin, margin)``, ``right`` at ``(margin + shift,) * 2``, pixel-wise max: ``(N, H, W)``."""
    size = DIGIT + shift + 2 * margin
    return torch.maximum(_place(left, margin, size), _place(right, margin + shift, size))  # (N, size, size)


def digit_split(test_fraction: float = 0.25, split_seed: int = 0) -> dict[str, Tensor]:
    """Indices of ``load_digits()`` images for ``train`` and ``test``: disjoint, stratified, sorted.

    Each class sends ``round(test_fraction * count)`` of its images, chosen by ``split_seed``, to test.
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, float) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be a float strictly between 0 and 1, got {test_fraction!r}")
    check_int("split_seed", split_seed, 0)
    _, labels = load_digits()  # (1797,)
    g, test = generator(split_seed, 1), []
    for c in range(CLASSES):
        members = torch.nonzero(labels == c).squeeze(1)  # (count,)
        k = round(test_fraction * len(members))
        if not 0 < k < len(members):
            raise ValueError(f"test_fraction={test_fraction} leaves class {c} ({len(members)} images) with an "
                             "empty train or test side")
        test.append(members[torch.randperm(len(members), generator=g)[:k]])  # (k,)
    is_test = torch.zeros(len(labels), dtype=torch.bool)  # (1797,)
    is_test[torch.cat(test)] = True
    return {"train": torch.nonzero(~is_test).squeeze(1), "test": torch.nonzero(is_test).squeeze(1)}


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled digits: images ``(1797, 8, 8)`` float32 in [0, 1], labels ``(1797,)`` int64."""
    from sklearn.datasets import load_digits as sklearn_digits  # imported here: importing sklearn costs ~1 s
    digits = sklearn_digits()
    images = torch.from_numpy(digits.images).to(torch.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    return images, torch.from_numpy(digits.target).to(torch.int64)  # (1797,)


def _place(digits: Tensor, top: int, size: int) -> Tensor:
    """Each ``(8, 8)`` digit at row and column ``top`` of a zero ``(size, size)`` canvas."""
    after = size - DIGIT - top
    return F.pad(digits, (top, after, top, after))  # (N, size, size)


def _cycle(pool: Tensor, n: int, g: torch.Generator) -> Tensor:
    """``n`` items of ``pool`` from back-to-back random permutations of it: each used equally often, up to one."""
    rounds = -(-n // len(pool))
    return torch.cat([pool[torch.randperm(len(pool), generator=g)] for _ in range(rounds)])[:n]  # (n,)


__all__ = ["MultiDigits", "digit_split", "overlay"]
