"""Unsupervised transfer: no labels in either domain. Self-supervised rotation prediction, then k-means.

Pan & Yang 2010 (IEEE TKDE 22(10), §5): *unsupervised* transfer learns from unlabelled source data for an
unsupervised target task. Source: Omniglot's background drawings without their labels; target: clustering the
drawings of new characters (evaluation alphabets) into characters.

The source task is the pretext task of Gidaris, Singh & Komodakis 2018 ("Unsupervised representation learning by
predicting image rotations", ICLR), §2: rotate each image by ``y * 90`` degrees, ``y`` in ``{0, 1, 2, 3}``, and
train ``F`` to predict ``y``, minimising ``-1/4 sum_y log F^y(rot(X, y))`` averaged over images (§2.1); as in
their implementation, all four rotated copies of an image go into the same mini-batch. :func:`train_rotation`
trains any network with a 4-way head, :func:`calibrate_batch_norm` and
:func:`~mapping.transfer.inductive.embed` give any extractor's features; :func:`pretrain_rotation`,
:func:`random_backbone` and :func:`features` do the same for the book's :class:`~mapping.nn.conv4.Conv4`.

The target task: k-means (``sklearn.cluster.KMeans``, seeded, fixed ``n_init``) on the embeddings of one
alphabet's drawings with ``k`` = its number of characters, scored against the true characters by normalised
mutual information (NMI, arithmetic mean normalisation) and the adjusted Rand index (ARI, Hubert & Arabie 1985),
both ``sklearn.metrics``; 1 for a perfect clustering, about 0 (NMI slightly above) for a random one.
Features are centred and L2-normalised per row before k-means, the same for every representation (pixels,
random network, rotation network).

Batch norm: ``bn="running"``; embeddings are computed in ``eval()`` mode, so each is a function of its image only.
The random baseline gets running statistics from one pass over the unlabelled source images
(:func:`calibrate_batch_norm`, no gradient step), so that it differs from the rotation network only in training.
"""
from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_int, check_number
from ..nn.conv4 import Conv4
from .inductive import BN, embed

ROTATIONS = 4


def _check_images(x: object, name: str = "images") -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[0] == 0 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name} must be a non-empty tensor (N, C, H, H) of square images, "
                         f"got {tuple(getattr(x, 'shape', ()))}")
    return x


def rotations(x: Tensor) -> tuple[Tensor, Tensor]:
    """The four rotations of each image (Gidaris et al. 2018, §2.1): ``(N, C, H, H) -> (4N, C, H, H)`` ordered
    image-major, and the rotation labels ``(4N,)`` int64, ``y`` for ``y * 90`` degrees counter-clockwise."""
    _check_images(x, "x")
    turned = torch.stack([torch.rot90(x, y, dims=(-2, -1)) for y in range(ROTATIONS)], dim=1)  # (N, 4, C, H, H)
    return turned.flatten(0, 1), torch.arange(ROTATIONS).repeat(x.shape[0])  # (4N, C, H, H), (4N,)


def train_rotation(model: nn.Module, images: Tensor, epochs: int, *, batch: int = 32, lr: float = 1e-3,
                   seed: int = 0) -> nn.Module:
    """Train any ``model`` that maps ``(B, C, H, H)`` images to ``(B, 4)`` logits to predict the rotation of the
    unlabelled ``images`` (Gidaris et al. 2018, §2.1), in place; returns it. Each Adam step takes ``batch``
    images with all four rotations each, the images shuffled by ``seed``. Drop the head to keep the extractor."""
    _check_images(images)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module mapping images to {ROTATIONS} logits, got "
                         f"{type(model).__name__}")
    check_int("epochs", epochs, 1)
    check_int("batch", batch, 1)
    opt = torch.optim.Adam(model.parameters(), lr=check_number("lr", lr, strict=True))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(images.shape[0], generator=gen).split(batch):
            x, y = rotations(images[idx])  # (4B, C, H, H), (4B,)
            logits = model(x)  # (4B, 4)
            if logits.shape != (x.shape[0], ROTATIONS):
                raise ValueError(f"model must map (B, C, H, H) images to (B, {ROTATIONS}) logits, got "
                                 f"{tuple(logits.shape)}")
            loss = F.cross_entropy(logits, y)  # ()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def pretrain_rotation(images: Tensor, epochs: int, *, batch: int = 32, lr: float = 1e-3, hidden: int = 64,
                      seed: int = 0) -> dict[str, Tensor]:
    """The book's backbone through :func:`train_rotation`: ``Conv4(4)`` (initialised from ``seed``) trained to
    predict the rotation of the unlabelled ``images`` ``(N, 1, H, H)``; returns the backbone's state dict (head
    dropped)."""
    _check_images(images)
    check_number("lr", lr, strict=True)
    torch.manual_seed(seed)
    net = Conv4(ROTATIONS, hidden=check_int("hidden", hidden, 1), bn=BN, in_channels=images.shape[1],
                image_size=images.shape[-1])
    train_rotation(net, images, epochs, batch=batch, lr=lr, seed=seed)
    return {n: t.clone() for n, t in net.state_dict().items() if not n.startswith("head.")}


@torch.no_grad()
def calibrate_batch_norm(net: nn.Module, images: Tensor, batch: int = 256) -> nn.Module:
    """Set every ``BatchNorm`` layer's running statistics to the average of its statistics over the chunks of
    ``batch`` images (one pass in ``train()`` mode with cumulative averaging, ``momentum=None``, no gradient
    step); returns ``net`` in ``eval()`` mode."""
    _check_images(images)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    net.train()
    for chunk in images.split(batch):
        net(chunk)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    return net.eval()


def random_backbone(images: Tensor | None = None, *, hidden: int = 64, seed: int = 0) -> dict[str, Tensor]:
    """A randomly initialised ``Conv4`` backbone's state dict (``seed``), its batch norm calibrated on the
    unlabelled ``images`` when given (:func:`calibrate_batch_norm`)."""
    torch.manual_seed(seed)
    net = Conv4(None, hidden=check_int("hidden", hidden, 1), bn=BN)
    if images is not None:
        calibrate_batch_norm(net, images)
    return {n: t.clone() for n, t in net.state_dict().items()}


def features(state: dict[str, Tensor] | None, images: Tensor, hidden: int = 64) -> Tensor:
    """Embeddings ``(N, d)`` of ``images`` ``(N, 1, H, H)``: the flattened pixels (``state=None``) or a
    ``Conv4`` backbone with ``state``, in ``eval()`` mode."""
    _check_images(images)
    if state is None:
        return images.flatten(1)  # (N, C * H * H)
    net = Conv4(None, hidden=check_int("hidden", hidden, 1), bn=BN, in_channels=images.shape[1],
                image_size=images.shape[-1])
    net.load_state_dict(state)
    return embed(net, images)  # (N, d)


def cluster_scores(features: Tensor, labels: Tensor, k: int, seed: int = 0, n_init: int = 10) -> dict[str, float]:
    """``{"nmi", "ari"}`` of k-means with ``k`` clusters on ``features`` ``(N, d)`` (centred, rows L2-normalised)
    against the true ``labels`` ``(N,)``. ``KMeans(k, n_init=n_init, random_state=seed)``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (N, d) tensor, got {tuple(getattr(features, 'shape', ()))}")
    if not isinstance(labels, Tensor) or labels.shape != features.shape[:1]:
        raise ValueError(f"labels must be an (N,) tensor with N = {features.shape[0]} (one per row of features), "
                         f"got {tuple(getattr(labels, 'shape', ()))}")
    check_int("k", k, 1)
    if k > features.shape[0]:
        raise ValueError(f"k must be at most the number of points ({features.shape[0]}), got {k}")
    check_int("seed", seed, 0)
    check_int("n_init", n_init, 1)
    z = features.double() - features.double().mean(0)  # (N, d)
    z = F.normalize(z, dim=1).numpy()  # (N, d)
    found = KMeans(k, n_init=n_init, random_state=seed).fit_predict(z)  # (N,)
    truth = labels.numpy()
    return {"nmi": float(normalized_mutual_info_score(truth, found)), "ari": float(adjusted_rand_score(truth, found))}


def evaluate_unsupervised(features: Tensor, labels: Tensor, groups: Tensor, seed: int = 0,
                          n_init: int = 10) -> dict[str, float]:
    """Mean :func:`cluster_scores` over ``groups`` (e.g. alphabets, ``(N,)``): within each group, k-means with
    ``k`` = the group's number of distinct ``labels``. Returns ``{"nmi", "ari", "groups"}``."""
    if not isinstance(groups, Tensor) or groups.shape != labels.shape:
        raise ValueError(f"groups must be an (N,) tensor like labels {tuple(labels.shape)}, "
                         f"got {tuple(getattr(groups, 'shape', ()))}")
    scores = []
    for g in groups.unique().tolist():
        rows = groups == g  # (N,) bool
        scores.append(cluster_scores(features[rows], labels[rows], int(labels[rows].unique().numel()), seed, n_init))
    return {"nmi": float(np.mean([s["nmi"] for s in scores])), "ari": float(np.mean([s["ari"] for s in scores])),
            "groups": float(len(scores))}


__all__ = ["ROTATIONS", "train_rotation", "calibrate_batch_norm", "cluster_scores", "evaluate_unsupervised", "features",
           "pretrain_rotation", "random_backbone", "rotations"]
