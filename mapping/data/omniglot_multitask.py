"""Omniglot as a three-task problem on one image: alphabet, character, and the amount of ink.

Every example is one 28x28 drawing of Lake et al.'s background set (:func:`.omniglot.load_omniglot`,
30 alphabets, 964 characters, 20 drawers each). Its tasks:

* ``alphabet``: which of the 30 alphabets, int64 in ``0..29`` (``OmniglotSplit.alphabet_index``);
* ``character``: which of the 964 characters, int64 in ``0..963`` (the row of the character in the
  ``OmniglotSplit``; ``character_ids`` keeps Omniglot's global id 1..964);
* ``ink``: the amount of ink, ``x.sum()`` in pixels of the 28x28 image (ink = 1, background = 0),
  float32 of shape ``(1,)`` to match a ``Linear(d, 1)`` head. It says how many and how long strokes a
  drawing has: mostly a property of the character (about 80% of its variance over the training
  drawers lies between characters), partly of the drawer's hand. Over the training drawers it averages
  64 pixels with a standard deviation of 23 (range 2-155), so a squared loss in these raw units starts
  two to three orders of magnitude above the cross-entropies (``ln 30 ~ 3.4``, ``ln 964 ~ 6.9``):
  predicting the mean costs 515, predicting 0 about 4600. Tasks with very different loss scales meet
  in one network, the situation of GradNorm (Chen et al. 2018, §4) and of uncertainty weighting
  (Kendall, Gal & Cipolla 2018, §3).
  ``standardise=True`` subtracts the training drawings' mean and divides by their standard deviation.

Splits are by drawer: drawers ``0..train_drawers-1`` (default 15, file suffixes ``_01`` to ``_15``)
train, the others (``_16`` to ``_20``) test. Test images are unseen drawings of characters seen in
training, so both classification tasks keep their classes. Examples are ordered by character, then
drawer.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int
from .multitask_toys import MultiTaskDataset
from .omniglot import DRAWERS, OmniglotSplit, load_omniglot

class OmniglotMultitask(MultiTaskDataset):
    """Omniglot drawings ``x (N, 1, 28, 28)`` with targets ``alphabet (N,)``, ``character (N,)``, ``ink (N, 1)``.

    ``drawer (N,)`` is each image's drawer index 0..19, ``character_ids (N,)`` Omniglot's global id,
    ``num_classes`` the classes of each classification task, ``ink_mean`` and ``ink_std`` the raw ink
    statistics of the training drawers (used when ``standardised``).
    """

    def __init__(self, x: Tensor, targets: dict[str, Tensor], drawer: Tensor, character_ids: Tensor,
                 alphabets: tuple[str, ...], characters: int, ink_mean: float, ink_std: float,
                 standardised: bool) -> None:
        super().__init__(x, targets)
        self.drawer, self.character_ids, self.alphabets = drawer, character_ids, alphabets
        self.num_classes = {"alphabet": len(alphabets), "character": characters}
        self.ink_mean, self.ink_std, self.standardised = ink_mean, ink_std, standardised


def omniglot_multitask(split: str = "train", *, train_drawers: int = 15, standardise: bool = False,
                       root: str | os.PathLike | None = None, **load_kwargs: Any) -> OmniglotMultitask:
    """Omniglot's background set as alphabet + character + ink tasks; ``split`` is ``train`` or ``test``.

    ``train`` holds drawers ``0..train_drawers-1`` of every character, ``test`` the rest. ``root`` and
    ``load_kwargs`` (``size``, ``resample``, ``strict``, ...) go to :func:`.omniglot.load_omniglot`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_int("train_drawers", train_drawers, 1)
    if train_drawers >= DRAWERS:
        raise ValueError(f"train_drawers must be below {DRAWERS} so that test keeps a drawer, got {train_drawers}")
    if not isinstance(standardise, bool):
        raise ValueError(f"standardise must be True or False, got {standardise!r}")
    data = load_omniglot("background", root, **load_kwargs)
    ink = data.images.sum((-2, -1))  # (characters, 20) pixels
    mean, std = ink[:, :train_drawers].mean().item(), ink[:, :train_drawers].std().item()
    drawers = torch.arange(train_drawers) if split == "train" else torch.arange(train_drawers, DRAWERS)  # (d,)
    x, targets = drawings_and_targets(data, drawers)
    if standardise:
        targets["ink"] = (targets["ink"] - mean) / std  # (N, 1)
    character = targets["character"]  # (N,)
    return OmniglotMultitask(x, targets, drawers.repeat(data.num_classes), data.character_ids[character],
                             data.alphabets, data.num_classes, mean, std, standardise)


def drawings_and_targets(data: OmniglotSplit, drawers: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """The drawings ``drawers (d,)`` of every character of ``data``, character-major, ``x (C * d, 1, H, W)``, and
    their targets ``alphabet (N,)``, ``character (N,)`` (the row in ``data``) and raw ``ink (N, 1)`` in pixels."""
    images = data.images[:, drawers]  # (C, d, H, W)
    c, d = images.shape[:2]
    character = torch.arange(c).repeat_interleave(d)  # (N,) character-major
    ink = images.sum((-2, -1)).reshape(-1, 1)  # (N, 1)
    targets = {"alphabet": data.alphabet_index[character], "character": character, "ink": ink}
    return images.reshape(c * d, 1, *images.shape[2:]), targets  # (N, 1, H, W)

__all__ = ["OmniglotMultitask", "drawings_and_targets", "omniglot_multitask"]
