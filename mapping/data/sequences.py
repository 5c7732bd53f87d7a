"""Episodes as sequences, for model-based meta-learning (Santoro et al. 2016, §3 and §4.1).

An episode draws ``n_way`` classes, gives them labels ``0..n_way-1`` in a random order (a new assignment in every
episode, so that no class keeps a label), and presents ``instances`` drawings of each class in a random order,
one per step. The learner sees each image together with the *previous* step's label (:func:`offset_labels`), so it
must bind image and label in memory to predict the label of a later drawing of the same class.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def offset_labels(y: Tensor, n_way: int) -> Tensor:
    """One-hot labels shifted by one step: ``y (B, T)`` in ``0..n_way-1`` -> ``(B, T, n_way)`` float with row ``t``
    the one-hot of ``y[:, t - 1]`` and zeros at ``t = 0``."""
    if not isinstance(y, Tensor) or y.dim() != 2 or y.dtype != torch.int64:
        raise ValueError(f"y must be an int64 tensor (B, T), got {getattr(y, 'dtype', type(y).__name__)} "
                         f"of shape {tuple(getattr(y, 'shape', ()))}")
    if y.shape[1] < 2:
        raise ValueError(f"sequences must have at least 2 steps (the label arrives one step late), got {y.shape[1]}")
    if y.numel() and (y.min() < 0 or y.max() >= n_way):
        raise ValueError(f"labels must be in 0..{n_way - 1} (n_way={n_way}), got {y.min().item()}..{y.max().item()}")
    onehot = F.one_hot(y, n_way).float()  # (B, T, n_way)
    return torch.cat([torch.zeros_like(onehot[:, :1]), onehot[:, :-1]], 1)  # (B, T, n_way)


def episode_sequences(images: Tensor, n_way: int, instances: int, episodes: int,
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``episodes`` sequences from ``images (classes, examples, H, W)``: ``x (episodes, T, H * W)`` and labels
    ``y (episodes, T)`` with ``T = n_way * instances``; classes, their labels, drawings and order drawn anew
    for every episode."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a (classes, examples, H, W) tensor, got {tuple(getattr(images, 'shape', ()))}")
    classes, examples = images.shape[:2]
    for name, value, high in (("n_way", n_way, classes), ("instances", instances, examples),
                              ("episodes", episodes, None)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high is not None and value > high):
            raise ValueError(f"{name} must be an int in 1..{high if high is not None else 'inf'}, got {value!r}")
    xs, ys = [], []
    for _ in range(episodes):
        chosen = torch.randperm(classes, generator=generator)[:n_way]  # (n_way,) classes; label = position
        draws = torch.stack([torch.randperm(examples, generator=generator)[:instances]
                             for _ in range(n_way)])  # (n_way, instances)
        labels = torch.arange(n_way).repeat_interleave(instances)  # (T,)
        order = torch.randperm(n_way * instances, generator=generator)  # (T,)
        labels = labels[order]  # (T,)
        which = draws.flatten()[order]  # (T,) drawing of each step
        xs.append(images[chosen[labels], which].flatten(1))  # (T, H * W)
        ys.append(labels)
    return torch.stack(xs), torch.stack(ys)  # (episodes, T, H * W), (episodes, T)


def accuracy_by_instance(logits: Tensor, y: Tensor, instances: int) -> Tensor:
    """Accuracy at the 1st, 2nd, ... presentation of each class (the paper's Table 1): ``(instances,)``."""
    seen = torch.zeros_like(y)  # (B, T) how many times y[:, t] appeared before t
    for t in range(1, y.shape[1]):
        seen[:, t] = (y[:, :t] == y[:, t:t + 1]).sum(1)
    right = (logits.argmax(-1) == y).double()  # (B, T)
    return torch.stack([right[seen == i].mean() for i in range(instances)])  # (instances,)


__all__ = ["accuracy_by_instance", "episode_sequences", "offset_labels"]
