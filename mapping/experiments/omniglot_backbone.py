"""The book's Omniglot backbones for inductive transfer: a :class:`~mapping.nn.conv4.Conv4` pre-trained to classify
the background characters, and few-shot splits of new characters to transfer it to.

Pan & Yang 2010, §3: the source task is classifying the 964 characters of Omniglot's background alphabets
(:func:`pretrain`), the target task classifying new characters of the evaluation alphabets from ``k`` labelled
drawings each (:func:`few_shot_split`). The methods themselves (probe, fine-tuning, training from scratch) work on
any network and live in :mod:`mapping.transfer.inductive`; here they get a Conv4 with ``bn="running"``
(``nn.BatchNorm2d``, see that module's batch-norm policy) built from a state dict (:func:`backbone`).
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import memo
from ..checks import check_choice, check_int, check_number
from ..data.omniglot import OmniglotSplit
from ..nn.conv4 import Conv4
from ..transfer import inductive as ind
from ..transfer.inductive import BN


@dataclass(frozen=True)
class FewShotSplit:
    """``k`` labelled drawings per character for training, the other ``20 - k`` for testing.

    Labels are the rows of the characters in the source :class:`OmniglotSplit` (``0..C-1``); examples are ordered
    by character, then by position in ``train_drawers`` / ``test_drawers`` ``(C, k)`` / ``(C, 20 - k)``.
    """

    train_x: Tensor  # (C * k, 1, H, W)
    train_y: Tensor  # (C * k,) int64
    test_x: Tensor  # (C * (20 - k), 1, H, W)
    test_y: Tensor  # (C * (20 - k),) int64
    train_drawers: Tensor  # (C, k) int64 drawer indices 0..19
    test_drawers: Tensor  # (C, 20 - k) int64

    @property
    def num_classes(self) -> int:
        return self.train_drawers.shape[0]


def few_shot_split(split: OmniglotSplit, k: int, seed: int = 0) -> FewShotSplit:
    """Pick ``k`` of each character's drawers at random (``seed``) for training; the rest are the test set.

    Each character gets its own random drawers (a ``torch.randperm`` per character from one generator), so that
    train and test drawers are disjoint for every character and the same ``seed`` gives the same split.
    """
    if not isinstance(split, OmniglotSplit):
        raise ValueError(f"split must be an OmniglotSplit (mapping.data.omniglot.load_omniglot), "
                         f"got {type(split).__name__}")
    classes, drawers = split.images.shape[:2]
    if classes == 0:
        raise ValueError("split must hold at least one character, got an empty OmniglotSplit")
    check_int("k", k, 1, why="labelled drawings per character")
    if k >= drawers:
        raise ValueError(f"k={k} leaves no drawing to test on: each character has {drawers} drawers; "
                         f"k must be in 1..{drawers - 1}")
    check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(drawers, generator=gen) for _ in range(classes)])  # (C, 20)
    train_d, test_d = order[:, :k], order[:, k:]  # (C, k), (C, 20 - k)
    rows = torch.arange(classes)[:, None]  # (C, 1)
    train_x = split.images[rows, train_d].reshape(-1, 1, *split.images.shape[2:])  # (C * k, 1, H, W)
    test_x = split.images[rows, test_d].reshape(-1, 1, *split.images.shape[2:])  # (C * (20 - k), 1, H, W)
    labels = torch.arange(classes)  # (C,)
    return FewShotSplit(train_x, labels.repeat_interleave(k), test_x, labels.repeat_interleave(drawers - k),
                        train_d, test_d)


def backbone(state: dict[str, Tensor] | None, hidden: int = 64, seed: int = 0) -> Conv4:
    """A :class:`Conv4` embedding (``bn="running"``, no head) from ``state``, or randomly initialised (``seed``)."""
    check_int("hidden", hidden, 1)
    torch.manual_seed(seed)
    net = Conv4(None, hidden=hidden, bn=BN)
    if state is not None:
        if not isinstance(state, dict):
            raise ValueError(f"state must be a backbone state dict (from pretrain) or None, got {type(state).__name__}")
        net.load_state_dict(state)
    return net


def from_scratch(x: Tensor, y: Tensor, classes: int, *, epochs: int, batch: int = 64, lr: float = 1e-3,
                 hidden: int = 64, seed: int = 0) -> nn.Sequential:
    """The fine-tuning network from a random initialisation (``seed``), every parameter at ``lr``."""
    return ind.fine_tune(backbone(None, hidden, seed), x, y, classes, epochs=epochs, batch=batch, lr=lr,
                     backbone_lr_scale=1.0, seed=seed)


def transfer(method: str, backbone_state: dict[str, Tensor] | None, train_x: Tensor, train_y: Tensor,
             test_x: Tensor, test_y: Tensor, *, epochs: int, seed: int = 0, batch: int = 64, lr: float = 1e-3,
             backbone_lr_scale: float = 0.1, hidden: int = 64) -> float:
    """Test accuracy (%) of ``method`` (:data:`~mapping.transfer.inductive.METHODS`) on Omniglot drawings, through
    :func:`~mapping.transfer.inductive.transfer_accuracy` with the :func:`backbone` of ``backbone_state``.

    ``backbone_state`` (from :func:`pretrain`) is required by ``probe`` and ``finetune`` and must be ``None`` for
    ``scratch``. ``train_x`` ``(N, 1, H, W)``, ``train_y`` ``(N,)`` int64.
    """
    check_choice("method", method, ind.METHODS)
    if (backbone_state is None) != (method == "scratch"):
        raise ValueError(f"backbone_state must be {'None' if method == 'scratch' else 'a state dict from pretrain'} "
                         f"for method={method!r}")
    for name, x in (("train", train_x), ("test", test_x)):
        if isinstance(x, Tensor) and x.dim() != 4:
            raise ValueError(f"{name}_x must be (N, 1, H, W) drawings, got {tuple(x.shape)}")
    return 100 * ind.transfer_accuracy(method, backbone(backbone_state, hidden, seed), train_x, train_y, test_x, test_y,
                                 epochs=epochs, seed=seed, batch=batch, lr=lr, backbone_lr_scale=backbone_lr_scale)


def pretrain(split: OmniglotSplit, epochs: int, *, drawers: int = 20, batch: int = 64, lr: float = 1e-3,
             hidden: int = 64, seed: int = 0) -> tuple[dict[str, Tensor], float]:
    """Train ``Conv4(classes)`` to classify the characters of ``split`` (the background set, 964 characters)
    from their first ``drawers`` drawers; return the backbone's state dict (the head dropped) and the accuracy
    (%) on the held-out drawers ``drawers..19`` (``nan`` when ``drawers = 20``)."""
    if not isinstance(split, OmniglotSplit) or split.num_classes == 0:
        raise ValueError("split must be a non-empty OmniglotSplit (the background characters)")
    total = split.images.shape[1]
    check_int("drawers", drawers, 1, total, why="drawers used for pre-training")
    torch.manual_seed(seed)
    net = Conv4(split.num_classes, hidden=check_int("hidden", hidden, 1), bn=BN)
    labels = torch.arange(split.num_classes)  # (C,)
    x = split.images[:, :drawers].reshape(-1, 1, *split.images.shape[2:])  # (C * drawers, 1, H, W)
    ind.fit(net, torch.optim.Adam(net.parameters(), lr=check_number("lr", lr, strict=True)), x,
            labels.repeat_interleave(drawers), epochs=epochs, batch=batch, seed=seed)
    held = split.images[:, drawers:].reshape(-1, 1, *split.images.shape[2:])  # (C * (20 - drawers), 1, H, W)
    val = 100 * ind.accuracy(net, held, labels.repeat_interleave(total - drawers)) if drawers < total else math.nan
    return {n: t.clone() for n, t in net.state_dict().items() if not n.startswith("head.")}, val


def fingerprint(split: OmniglotSplit) -> str:
    """SHA-256 (16 hex digits) of ``split``'s images: tells two loads of the same characters from any others."""
    images = split.images.detach().cpu().contiguous()
    return hashlib.sha256(str(tuple(images.shape)).encode() + images.numpy().tobytes()).hexdigest()[:16]


def pretrained(split: OmniglotSplit, epochs: int, *, drawers: int = 20, batch: int = 64, lr: float = 1e-3,
               hidden: int = 64, seed: int = 0) -> tuple[dict[str, Tensor], float, float]:
    """:func:`pretrain`'s ``(state, val)`` and the seconds it took, computed once per configuration and read back
    afterwards (:func:`mapping.memo.cached`, keyed by the arguments and the images' :func:`fingerprint`), so that
    pages pre-training the same backbone share it; the seconds are those of the computation, wherever it ran."""
    config = dict(images=fingerprint(split), epochs=epochs, drawers=drawers, batch=batch, lr=lr, hidden=hidden,
                  seed=seed)

    def compute() -> tuple[dict[str, Tensor], float, float]:
        tic = time.perf_counter()
        state, val = pretrain(split, epochs, drawers=drawers, batch=batch, lr=lr, hidden=hidden, seed=seed)
        return state, val, time.perf_counter() - tic

    return tuple(memo.cached("omniglot-pretrain", config, compute))


__all__ = ["FewShotSplit", "backbone", "few_shot_split", "fingerprint", "from_scratch", "pretrain", "pretrained",
           "transfer"]
