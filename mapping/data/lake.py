"""Lake et al. 2015 (Science): the 20 runs of 20-way one-shot classification, and their error rate.

``all_runs.zip`` holds ``runNN/training/classYY.png`` (one drawing of each of 20 evaluation
characters), ``runNN/test/itemXX.png`` (20 new drawings of the same characters, by other drawers)
and ``runNN/class_labels.txt`` (``runNN/test/itemXX.png runNN/training/classYY.png`` per line).
Each test item is classified against the 20 training images: 20 runs x 20 items = 400 trials, scored
as an error rate in %. Lake et al. report 4.5% for people and 3.3% for Bayesian Program Learning.
Images are preprocessed like :mod:`mapping.data.omniglot` (``size`` x ``size``, ink = 1.0).
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from .files import omniglot_file
from .omniglot import RESAMPLE, decode_member, layout_error, open_zip

RUNS, WAYS = 20, 20
_PNG = re.compile(r"run(\d+)/(training/class|test/item)(\d+)\.png")
_LABEL = re.compile(r"run(\d+)/test/item(\d+)\.png\s+run(\d+)/training/class(\d+)\.png")


@dataclass(frozen=True)
class LakeRuns:
    """The one-shot runs as tensors; ``labels[r, i]`` is the training index of test item ``i`` of run ``r``."""

    training: Tensor  # (runs, ways, 28, 28) float32, ink = 1
    test: Tensor  # (runs, ways, 28, 28) float32, ink = 1
    labels: Tensor  # (runs, ways) int64 in 0..ways-1

    @property
    def num_runs(self) -> int:
        return self.training.shape[0]

    def subset(self, keep: Tensor) -> "LakeRuns":
        """The runs where ``keep`` (a ``(runs,)`` bool mask or indices) selects them."""
        return LakeRuns(self.training[keep], self.test[keep], self.labels[keep])


@dataclass(frozen=True)
class LakeResult:
    """``error`` in % over all trials; ``run_errors`` in % per run; ``predictions`` per test item."""

    error: float
    run_errors: Tensor  # (runs,) float64, %
    predictions: Tensor  # (runs, ways) int64


def load_lake_runs(root: str | os.PathLike | None = None, *, size: int = 28, resample: str = "lanczos",
                   download: bool | None = None, strict: bool = True) -> LakeRuns:
    """Read ``all_runs.zip`` from the Omniglot root (see :func:`~mapping.data.files.omniglot_file`).

    ``strict`` requires Lake's 20 runs of 20 ways; without it any consistent number is accepted.
    """
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    path = omniglot_file("all_runs.zip", root, download)
    with open_zip(path) as archive:
        members, labels = _layout(archive, path, strict)
        runs, ways = labels.shape
        pixels = np.empty((2, runs, ways, size, size), dtype=np.uint8)  # (training/test, runs, ways, size, size)
        for (kind, r, i), member in members.items():
            pixels[kind, r, i] = decode_member(archive, member, path, size, resample)  # (size, size)
    images = torch.from_numpy(pixels).to(torch.float32).div_(255.0)  # (2, runs, ways, size, size)
    return LakeRuns(images[0], images[1], labels)


def _layout(archive: zipfile.ZipFile, path: Path, strict: bool) -> tuple[dict[tuple[int, int, int], str], Tensor]:
    """Members keyed by (0 training / 1 test, run, index) and labels ``(runs, ways)``, or ``ValueError``."""
    members: dict[tuple[int, int, int], str] = {}
    for name in archive.namelist():
        match = _PNG.fullmatch(name)
        if match:
            members[(int(match[2] == "test/item"), int(match[1]) - 1, int(match[3]) - 1)] = name
    runs = 1 + max((r for _, r, _ in members), default=-1)
    ways = 1 + max((i for _, _, i in members), default=-1)
    labels = torch.full((runs, ways), -1, dtype=torch.int64)  # (runs, ways)
    problems = [f"run{r + 1:02d}/{('training/class', 'test/item')[k]}{i + 1:02d}.png is missing"
                for k in (0, 1) for r in range(runs) for i in range(ways) if (k, r, i) not in members]
    for r in range(runs):
        name = f"run{r + 1:02d}/class_labels.txt"
        if name not in archive.namelist():
            problems.append(f"{name} is missing")
            continue
        for run, item, run2, cls in _LABEL.findall(archive.read(name).decode("utf-8", "replace")):
            if int(run) == int(run2) == r + 1 and 1 <= int(item) <= ways and 1 <= int(cls) <= ways:
                labels[r, int(item) - 1] = int(cls) - 1
        problems += [f"{name} gives no training class for item{i + 1:02d}" for i in range(ways) if labels[r, i] < 0]
    if runs == 0:
        problems.append("no runNN/training/classYY.png or runNN/test/itemXX.png files")
    elif strict and (runs, ways) != (RUNS, WAYS):
        problems.append(f"{runs} runs of {ways} ways, expected {RUNS} of {WAYS} (pass strict=False to accept)")
    if problems:
        raise layout_error(path, "the layout of Lake's all_runs.zip", problems)
    return members, labels


def nearest_neighbour(embed: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """A ``classify`` function: each query takes the support index nearest in Euclidean distance of ``embed``."""
    def classify(support: Tensor, query: Tensor) -> Tensor:
        e_support = embed(support).flatten(1)  # (ways, features)
        e_query = embed(query).flatten(1)  # (ways, features)
        return torch.cdist(e_query, e_support).argmin(dim=1)  # (ways,)
    return classify


def unseen_runs(runs: LakeRuns, images: Tensor, tol: float = 1e-3) -> Tensor:
    """``(runs,)`` bool: True for the runs none of whose 40 drawings is among ``images (..., H, W)`` (a training
    set), compared pixel by pixel (Euclidean distance below ``tol``). Lake's runs are drawings of the evaluation
    set, so a split that trains on evaluation characters (the 1200-character split trains on the first 236 of
    them) has seen some runs; score a model on the others."""
    seen = images.reshape(-1, images.shape[-2] * images.shape[-1])  # (N, H * W)
    drawings = torch.cat([runs.training, runs.test], 1).flatten(2)  # (runs, 2 * ways, H * W)
    found = torch.zeros(drawings.shape[:2], dtype=torch.bool)  # (runs, 2 * ways)
    for start in range(0, len(seen), 4096):
        near = torch.cdist(drawings.flatten(0, 1), seen[start:start + 4096]).min(1).values  # (runs * 2 * ways,)
        found |= (near < tol).view(found.shape)
    return ~found.any(1)  # (runs,)


def evaluate_lake(classify: Callable[[Tensor, Tensor], Tensor] | None = None, *,
                  embed: Callable[[Tensor], Tensor] | None = None, runs: LakeRuns | None = None,
                  root: str | os.PathLike | None = None, device: torch.device | str | None = None) -> LakeResult:
    """Lake et al. 2015's one-shot error rate (%) over the 400 trials, and per run.

    ``classify(support (ways, 1, 28, 28), query (ways, 1, 28, 28)) -> (ways,)`` support index for each
    query; or ``embed(images (ways, 1, 28, 28)) -> (ways, ...)`` for a Euclidean nearest neighbour.
    Runs are loaded from ``root`` unless given; inputs go to ``device`` (default: stay on CPU).
    Called under ``torch.no_grad()``.
    """
    if (classify is None) == (embed is None):
        raise ValueError("pass exactly one of classify or embed")
    classify = classify if classify is not None else nearest_neighbour(embed)
    runs = runs if runs is not None else load_lake_runs(root)
    ways = runs.labels.shape[1]
    predictions = torch.empty_like(runs.labels)  # (runs, ways)
    with torch.no_grad():
        for r in range(runs.num_runs):
            support = runs.training[r].unsqueeze(1).to(device)  # (ways, 1, 28, 28)
            query = runs.test[r].unsqueeze(1).to(device)  # (ways, 1, 28, 28)
            predicted = torch.as_tensor(classify(support, query))  # (ways,)
            if predicted.shape != (ways,) or predicted.is_floating_point():
                raise ValueError(f"classify must return an integer tensor of shape ({ways},) (a support index "
                                 f"per query), got dtype {predicted.dtype} and shape {tuple(predicted.shape)}")
            predictions[r] = predicted.cpu()
    wrong = (predictions != runs.labels).to(torch.float64)  # (runs, ways)
    return LakeResult(100.0 * wrong.mean().item(), 100.0 * wrong.mean(dim=1), predictions)


__all__ = ["LakeResult", "LakeRuns", "evaluate_lake", "load_lake_runs", "nearest_neighbour", "unseen_runs"]
