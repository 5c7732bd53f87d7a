"""Siamese networks for one-shot classification (Koch, Zemel & Salakhutdinov 2015).

A verification network, trained on same/different pairs, classifies by similarity to the support set:

* §3.1: twin embeddings ``h_1, h_2`` of a pair are compared by a learned weighted L1 distance,
  ``p = sigmoid(sum_j alpha_j |h_1^(j) - h_2^(j)| + b)``, the probability that the pair is of one class
  (:func:`siamese_logits` returns the logit; :class:`SiameseNetwork` holds ``alpha``, ``b`` in ``distance``).
* §3.2: binary cross-entropy ``L = -(y log p + (1 - y) log(1 - p))`` on pairs with ``y = 1`` for the same class
  (the paper's L2 penalty ``lambda |w|^2`` is left to the optimizer's weight decay).
* §4.3: one-shot classification picks the class of the most similar support example, ``C* = argmax_c p^(c)``.
  With ``k_shot > 1`` we score a class by the **max** over its shots by default (``reduce="max"``), which is
  exactly "the class of the most similar support example"; ``reduce="mean"`` averages the shots' logits.

Pairs come balanced (half same, half different) from class-indexed images (:func:`sample_pairs`) or from
the support and query examples of each task of a :class:`~mapping.data.TaskBatch` (:func:`pairs_from_batch`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.sampler import random_subsets
from ..data.tasks import TaskBatch
from ..checks import check_int
from .checks import LossFn
from .metric import MetricLearner, check_embeddings, check_integer_labels, check_labels, checked_episode

REDUCTIONS = ("max", "mean")


def siamese_logits(z1: Tensor, z2: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``sum_j alpha_j |z1_j - z2_j| + b``, the logit of Koch et al.'s ``p`` (§3.1); ``(..., d) x2 -> (...)``."""
    return (z1 - z2).abs() @ weight + bias  # (...)


def pairwise_siamese_logits(z_query: Tensor, z_support: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Logit of every (query, support) pair of each task: ``(tasks, q, d), (tasks, m, d) -> (tasks, q, m)``."""
    check_embeddings(z_support, "z_support")
    check_embeddings(z_query, "z_query", z_support.shape[0], z_support.shape[2])
    return siamese_logits(z_query[:, :, None, :], z_support[:, None, :, :], weight, bias)  # (tasks, q, m)


def class_scores(pair_logits: Tensor, y_support: Tensor, n_way: int, reduce: str = "max") -> Tensor:
    """Score of each class for each query: the max (or mean) of the pair logits over the class's shots.

    ``pair_logits (tasks, q, m)``, ``y_support (tasks, m)`` -> ``(tasks, q, n_way)``; ``argmax`` is Koch's
    one-shot rule (§4.3). The scores are verification logits, not a softmax's logits.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    check_labels(y_support, n_way)
    if pair_logits.dim() != 3 or y_support.shape != (pair_logits.shape[0], pair_logits.shape[2]):
        raise ValueError(f"y_support has shape {tuple(y_support.shape)} but pair_logits (tasks, q, m) has "
                         f"{tuple(pair_logits.shape)}")
    tasks, q, _ = pair_logits.shape
    index = y_support.long()[:, None, :].expand_as(pair_logits)  # (tasks, q, m)
    if reduce == "mean":
        one_hot = F.one_hot(y_support.long(), n_way).to(pair_logits.dtype)  # (tasks, m, n_way)
        return (pair_logits @ one_hot) / one_hot.sum(1)[:, None, :]  # (tasks, q, n_way)
    start = pair_logits.new_full((tasks, q, n_way), float("-inf"))  # (tasks, q, n_way)
    return start.scatter_reduce(2, index, pair_logits, reduce="amax")  # (tasks, q, n_way)


def _check_pairs(pairs: int) -> tuple[int, int]:
    check_int("pairs", pairs, 2, why="half same-class, half different-class")
    return pairs // 2, pairs - pairs // 2


def sample_pairs(images: Tensor, pairs: int, generator: torch.Generator | None = None, *,
                 channel: bool | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Balanced verification pairs from class-indexed ``images (classes, examples, *shape)``.

    ``pairs // 2`` same-class pairs (a uniform class, two distinct examples) and the rest different-class
    pairs (two distinct classes, a uniform example of each), shuffled. Returns ``x1, x2 (pairs, *example)``
    and ``same (pairs,)`` float (1 = same class). 2-D examples get a channel dim, as in
    :class:`~mapping.data.EpisodeSampler`.
    """
    if not isinstance(images, Tensor) or images.dim() < 3 or images.shape[0] < 2 or images.shape[1] < 2:
        raise ValueError("images must be a tensor of shape (classes >= 2, examples >= 2, *shape), "
                         f"got {tuple(getattr(images, 'shape', ()))}")
    n_same, n_diff = _check_pairs(pairs)
    classes, examples = images.shape[:2]
    device = generator.device if generator is not None else images.device
    same_class = torch.randint(classes, (n_same, 1), generator=generator, device=device).expand(-1, 2)  # (n_same, 2)
    same_ex = random_subsets((n_same,), examples, 2, generator, device)  # (n_same, 2)
    diff_class = random_subsets((n_diff,), classes, 2, generator, device)  # (n_diff, 2)
    diff_ex = torch.randint(examples, (n_diff, 2), generator=generator, device=device)  # (n_diff, 2)
    order = torch.randperm(pairs, generator=generator, device=device)  # (pairs,)
    cls = torch.cat([same_class, diff_class])[order].to(images.device)  # (pairs, 2)
    ex = torch.cat([same_ex, diff_ex])[order].to(images.device)  # (pairs, 2)
    same = (order < n_same).to(images.dtype if images.is_floating_point() else torch.float32)  # (pairs,)
    x = images[cls, ex]  # (pairs, 2, *shape)
    if (images.dim() == 4) if channel is None else channel:
        x = x.unsqueeze(2)  # (pairs, 2, 1, H, W)
    return x[:, 0], x[:, 1], same


def _masked_choice(mask: Tensor, generator: torch.Generator | None) -> Tensor:
    """A uniform ``True`` position along the last dim of ``mask (..., n)`` (each row has one) -> ``(...)``."""
    keys = torch.rand(mask.shape, generator=generator, device=generator.device if generator else mask.device)
    return keys.to(mask.device).masked_fill(~mask, -1.0).argmax(-1)  # (...)


def pairs_from_batch(batch: TaskBatch, pairs: int, generator: torch.Generator | None = None,
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """Balanced verification pairs within each task, from its support and query examples together.

    Per task: ``pairs // 2`` same-label pairs (distinct examples) and the rest different-label pairs, in a
    random order; each anchor is uniform over the examples that have a partner, the partner uniform over the
    valid ones. Returns ``x1, x2 (tasks, pairs, *example)`` and ``same (tasks, pairs)`` float.
    """
    if not isinstance(batch, TaskBatch):
        raise ValueError(f"batch must be a mapping.data.TaskBatch, got {type(batch).__name__}")
    n_same, _ = _check_pairs(pairs)
    check_integer_labels(batch.support_y)
    check_integer_labels(batch.query_y, "query_y")
    x = torch.cat([batch.support_x, batch.query_x], 1)  # (tasks, P, *example)
    y = torch.cat([batch.support_y, batch.query_y], 1)  # (tasks, P)
    tasks, pool = y.shape
    equal = y[:, :, None] == y[:, None, :]  # (tasks, P, P)
    partner_same = equal & ~torch.eye(pool, dtype=torch.bool, device=y.device)  # (tasks, P, P)
    partner_diff = ~equal  # (tasks, P, P)
    for name, partner in (("two examples of one label", partner_same), ("two different labels", partner_diff)):
        if not partner.any(-1).any(-1).all():
            raise ValueError(f"batch has a task without {name}: cannot make balanced pairs from it")
    key_device = generator.device if generator is not None else y.device
    order = torch.rand(tasks, pairs, generator=generator, device=key_device).argsort(-1).to(y.device)  # (tasks, pairs)
    want_same = order < n_same  # (tasks, pairs)
    anchor_ok = torch.where(want_same[..., None], partner_same.any(-1)[:, None], partner_diff.any(-1)[:, None])
    anchor = _masked_choice(anchor_ok, generator)  # (tasks, pairs)
    rows = torch.arange(tasks, device=y.device)[:, None]  # (tasks, 1)
    partner_ok = torch.where(want_same[..., None], partner_same[rows, anchor], partner_diff[rows, anchor])
    partner = _masked_choice(partner_ok, generator)  # (tasks, pairs)
    dtype = x.dtype if x.is_floating_point() else torch.float32
    return x[rows, anchor], x[rows, partner], want_same.to(dtype)  # (tasks, pairs, *example) x2, (tasks, pairs)


class SiameseNetwork(MetricLearner):
    """Koch et al. 2015 around any embedding ``backbone``: ``forward`` returns class scores ``(tasks, q, n_way)``.

    ``distance = Linear(dim, 1)`` holds ``alpha`` and ``b``; ``dim`` defaults to ``backbone.out_dim``.
    ``reduce`` scores a class by the max (default) or mean of its shots' logits. Train with
    :meth:`pair_loss` on :func:`sample_pairs` (Koch's protocol) or with :meth:`meta_loss` on episodes.
    """

    def __init__(self, backbone: nn.Module, *, dim: int | None = None, reduce: str = "max") -> None:
        super().__init__(backbone)
        dim = getattr(backbone, "out_dim", None) if dim is None else dim
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be the backbone's embedding size (a positive int), got {dim!r}")
        if reduce not in REDUCTIONS:
            raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
        self.distance = nn.Linear(dim, 1)
        self.reduce = reduce

    def similarity(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Verification logits of embedded pairs ``(..., d), (..., d) -> (...)``."""
        return siamese_logits(z1, z2, self.distance.weight[0], self.distance.bias[0])  # (...)

    def verify(self, x1: Tensor, x2: Tensor, batch_dims: int = 1) -> Tensor:
        """Verification logits of image pairs ``(*lead, *image)`` with ``batch_dims`` leading dims -> ``lead``."""
        if not isinstance(x1, Tensor) or not isinstance(x2, Tensor) or x1.shape != x2.shape:
            raise ValueError(f"x1 and x2 must be tensors of one shape, got {tuple(getattr(x1, 'shape', ()))} "
                             f"and {tuple(getattr(x2, 'shape', ()))}")
        if isinstance(batch_dims, bool) or not isinstance(batch_dims, int) or not 1 <= batch_dims < x1.dim():
            raise ValueError(f"batch_dims must be an int in [1, {x1.dim() - 1}] for inputs of shape "
                             f"{tuple(x1.shape)}, got {batch_dims!r}")
        lead = x1.shape[:batch_dims]
        z = self.backbone(torch.cat([x1.flatten(0, batch_dims - 1), x2.flatten(0, batch_dims - 1)]))  # (2N, d)
        z1, z2 = z.chunk(2)  # (N, d) each
        return self.similarity(z1, z2).reshape(lead)  # (*lead)

    def pair_loss(self, x1: Tensor, x2: Tensor, same: Tensor, batch_dims: int = 1) -> tuple[Tensor, Tensor]:
        """Binary cross-entropy on pairs (Koch §3.2) and the verification accuracy (no gradient)."""
        logits = self.verify(x1, x2, batch_dims)  # (*lead)
        if same.shape != logits.shape:
            raise ValueError(f"same has shape {tuple(same.shape)} but the pairs have {tuple(logits.shape)}")
        loss = F.binary_cross_entropy_with_logits(logits, same.to(logits.dtype))
        return loss, ((logits > 0) == (same > 0.5)).float().mean().detach()

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, n_way: int) -> Tensor:
        z_support, z_query = self.embed(support_x, support_y, query_x, n_way)  # (tasks, m, d), (tasks, q, d)
        w, b = self.distance.weight[0], self.distance.bias[0]  # (d,), ()
        pair = pairwise_siamese_logits(z_query, z_support, w, b)  # (tasks, q, m)
        return class_scores(pair, support_y, n_way, self.reduce)  # (tasks, q, n_way)

    def meta_loss(self, batch: TaskBatch, loss_fn: LossFn | None = None) -> Tensor:
        """Balanced BCE over every (query, support) pair of every task (:mod:`mapping.meta.protocol`); the
        one-shot query accuracy (a fraction) goes to ``self.diagnostics["accuracy"]``.

        Same-class and different-class pairs each weigh one half, so a 5-way episode's 1:4 imbalance does
        not teach the network to answer "different". A ``loss_fn(scores (tasks*q, n_way), labels (tasks*q,))``
        replaces it by a loss on the class scores.
        """
        n_way = checked_episode(batch, loss_fn)
        z_support, z_query = self.embed(batch.support_x, batch.support_y, batch.query_x, n_way)  # (tasks, m|q, d)
        w, b = self.distance.weight[0], self.distance.bias[0]  # (d,), ()
        pair = pairwise_siamese_logits(z_query, z_support, w, b)  # (tasks, q, m)
        scores = class_scores(pair, batch.support_y, n_way, self.reduce)  # (tasks, q, n_way)
        if loss_fn is None:
            same = batch.query_y[:, :, None] == batch.support_y[:, None, :]  # (tasks, q, m)
            bce = F.binary_cross_entropy_with_logits(pair, same.to(pair.dtype), reduction="none")  # (tasks, q, m)
            loss = 0.5 * bce[same].mean() + 0.5 * bce[~same].mean() if (~same).any() else bce.mean()
        else:
            loss = loss_fn(scores.flatten(0, 1), batch.query_y.long().flatten())
        self.diagnostics = {"accuracy": (scores.argmax(-1) == batch.query_y).float().mean().detach()}
        return loss


__all__ = ["REDUCTIONS", "SiameseNetwork", "class_scores", "pairs_from_batch", "pairwise_siamese_logits",
           "sample_pairs", "siamese_logits"]
