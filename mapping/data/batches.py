"""Iterating over an in-memory multi-task dataset: epochs of shuffled mini-batches ``(x, {task: y})``."""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..checks import check_int


def shuffled_batches(dataset, batch: int, epochs: int = 1, seed: int = 0) -> Iterator[tuple[Tensor, dict]]:
    """``epochs`` passes over a multi-task dataset (``.x``, ``.targets``) in shuffled mini-batches of ``batch``.

    Yields ``(x, {task: y})``; each epoch is a fresh permutation from a ``torch.Generator`` seeded by ``seed``.
    """
    check_int("batch", batch, 1)
    check_int("epochs", epochs, 1)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(dataset.x), generator=gen).split(batch):
            yield dataset.x[idx], {t: y[idx] for t, y in dataset.targets.items()}


__all__ = ["shuffled_batches"]
