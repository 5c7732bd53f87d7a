"""Inductive transfer: a few labelled drawings of new Omniglot characters, and a backbone pre-trained on others.

Pan & Yang 2010 ("A survey on transfer learning", IEEE TKDE 22(10), §2.3 and §3): transfer is *inductive*
when the target task differs from the source task and some labelled target data are available. Here the source
task is classifying the 964 characters of Omniglot's background alphabets (:func:`pretrain`), the target task
classifying new characters of the evaluation alphabets from ``k`` labelled drawings each (:func:`few_shot_split`).
Three ways of using the source, all through :func:`transfer`:

* ``"probe"`` (:func:`linear_probe`): the pre-trained backbone is frozen and only a new linear head is trained;
* ``"finetune"`` (:func:`fine_tune`): backbone and new head are trained together, the backbone at a lower
  learning rate (``backbone_lr_scale`` = 0.1 times the head's, two param groups of one Adam);
* ``"scratch"`` (:func:`from_scratch`): the same network from a random initialisation, every parameter at the
  head's rate: the baseline that says what the source was worth.

Batch-norm policy: backbones are :class:`~mapping.nn.conv4.Conv4` with ``bn="running"`` (``nn.BatchNorm2d``).
Pre-training and fine-tuning run in ``train()`` mode (batch statistics, running averages updated; fine-tuning
thus re-estimates them on the target drawings); every evaluation runs in ``eval()`` mode, so that a test
prediction depends on its own image only. The probe's backbone stays in ``eval()`` mode throughout, using the
source's running statistics: its parameters *and* buffers are bit-identical afterwards (:func:`freeze`), and
its features are computed once and cached, which is exactly training the head on a frozen network.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import memo
from ..data.omniglot import OmniglotSplit
from ..nn.conv4 import Conv4

METHODS = ("probe", "finetune", "scratch")
BN = "running"  # the batch-norm policy of every backbone here (see the module docstring)


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


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite real number > 0, got {value!r}")
    return float(value)


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
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1 (labelled drawings per character), got {k!r}")
    if k >= drawers:
        raise ValueError(f"k={k} leaves no drawing to test on: each character has {drawers} drawers; "
                         f"k must be in 1..{drawers - 1}")
    _check_int("seed", seed, 0)
    gen = torch.Generator().manual_seed(seed)
    order = torch.stack([torch.randperm(drawers, generator=gen) for _ in range(classes)])  # (C, 20)
    train_d, test_d = order[:, :k], order[:, k:]  # (C, k), (C, 20 - k)
    rows = torch.arange(classes)[:, None]  # (C, 1)
    train_x = split.images[rows, train_d].reshape(-1, 1, *split.images.shape[2:])  # (C * k, 1, H, W)
    test_x = split.images[rows, test_d].reshape(-1, 1, *split.images.shape[2:])  # (C * (20 - k), 1, H, W)
    labels = torch.arange(classes)  # (C,)
    return FewShotSplit(train_x, labels.repeat_interleave(k), test_x, labels.repeat_interleave(drawers - k),
                        train_d, test_d)


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module`` in place: no gradients, ``eval()`` mode (batch norm uses, never updates, its running
    statistics). Returns it. A later ``.train()`` call would switch batch norm back to batch statistics, so
    callers keep a frozen module out of any parent that is put in ``train()`` mode."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be an nn.Module, got {type(module).__name__}")
    module.requires_grad_(False)
    return module.eval()


def backbone(state: dict[str, Tensor] | None, hidden: int = 64, seed: int = 0) -> Conv4:
    """A :class:`Conv4` embedding (``bn="running"``, no head) from ``state``, or randomly initialised (``seed``)."""
    _check_int("hidden", hidden, 1)
    torch.manual_seed(seed)
    net = Conv4(None, hidden=hidden, bn=BN)
    if state is not None:
        if not isinstance(state, dict):
            raise ValueError(f"state must be a backbone state dict (from pretrain) or None, got {type(state).__name__}")
        net.load_state_dict(state)
    return net


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *, epochs: int, batch: int,
        seed: int) -> nn.Module:
    """Minimise the cross-entropy of ``model(x)`` against ``y`` with ``optimizer``: ``epochs`` passes over
    shuffled mini-batches of ``batch`` examples (the shuffles seeded by ``seed``), in ``train()`` mode."""
    _check_int("epochs", epochs, 1)
    _check_int("batch", batch, 1)
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must hold the same positive number of examples, got {x.shape[0]} and {y.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=gen).split(batch):
            loss = F.cross_entropy(model(x[idx]), y[idx])  # ()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def embed(net: nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    """``net(x)`` in ``eval()`` mode without gradients, in chunks of ``batch``: ``(N, ...) -> (N, d)``."""
    net.eval()
    return torch.cat([net(chunk) for chunk in x.split(batch)])  # (N, d)


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Accuracy (%) of ``model`` in ``eval()`` mode on ``(x, y)``."""
    return 100 * (embed(model, x).argmax(-1) == y).double().mean().item()


def linear_probe(net: Conv4, x: Tensor, y: Tensor, classes: int, *, epochs: int, batch: int = 64,
                 lr: float = 1e-3, seed: int = 0) -> nn.Linear:
    """Train a new ``Linear(embedding_dim, classes)`` on the frozen ``net``'s features; ``net`` is frozen in place
    (:func:`freeze`) and left bit-identical. The features are computed once, in ``eval()`` mode."""
    freeze(net)
    features = embed(net, x)  # (N, d)
    torch.manual_seed(seed)
    head = nn.Linear(net.embedding_dim, _check_int("classes", classes, 1))
    fit(head, torch.optim.Adam(head.parameters(), lr=_check_float("lr", lr)), features, y,
        epochs=epochs, batch=batch, seed=seed)
    return head


def fine_tune_optimizer(net: nn.Module, head: nn.Module, lr: float, backbone_lr_scale: float) -> torch.optim.Adam:
    """Adam with two param groups: ``head`` at ``lr`` (group 0), ``net`` at ``lr * backbone_lr_scale`` (group 1)."""
    lr, scale = _check_float("lr", lr), _check_float("backbone_lr_scale", backbone_lr_scale)
    return torch.optim.Adam([{"params": list(head.parameters()), "lr": lr},
                             {"params": list(net.parameters()), "lr": lr * scale}])


def fine_tune(net: Conv4, x: Tensor, y: Tensor, classes: int, *, epochs: int, batch: int = 64, lr: float = 1e-3,
              backbone_lr_scale: float = 0.1, seed: int = 0) -> nn.Sequential:
    """Train ``net`` (in place) and a new linear head together; the backbone's rate is ``backbone_lr_scale * lr``
    (:func:`fine_tune_optimizer`). Returns ``Sequential(net, head)`` in ``eval()`` mode."""
    net.requires_grad_(True)
    torch.manual_seed(seed)
    head = nn.Linear(net.embedding_dim, _check_int("classes", classes, 1))
    model = nn.Sequential(net, head)
    return fit(model, fine_tune_optimizer(net, head, lr, backbone_lr_scale), x, y, epochs=epochs, batch=batch,
               seed=seed)


def from_scratch(x: Tensor, y: Tensor, classes: int, *, epochs: int, batch: int = 64, lr: float = 1e-3,
                 hidden: int = 64, seed: int = 0) -> nn.Sequential:
    """The fine-tuning network from a random initialisation (``seed``), every parameter at ``lr``."""
    return fine_tune(backbone(None, hidden, seed), x, y, classes, epochs=epochs, batch=batch, lr=lr,
                     backbone_lr_scale=1.0, seed=seed)


def transfer(method: str, backbone_state: dict[str, Tensor] | None, train_x: Tensor, train_y: Tensor,
             test_x: Tensor, test_y: Tensor, *, epochs: int, seed: int = 0, batch: int = 64, lr: float = 1e-3,
             backbone_lr_scale: float = 0.1, hidden: int = 64) -> float:
    """Test accuracy (%) of ``method`` (:data:`METHODS`) trained on ``(train_x, train_y)``.

    ``backbone_state`` (from :func:`pretrain`) is required by ``probe`` and ``finetune`` and must be ``None`` for
    ``scratch``. Classes are ``0..max(train_y)``; ``train_x`` ``(N, 1, H, W)``, ``train_y`` ``(N,)`` int64.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if (backbone_state is None) != (method == "scratch"):
        raise ValueError(f"backbone_state must be {'None' if method == 'scratch' else 'a state dict from pretrain'} "
                         f"for method={method!r}")
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if not isinstance(x, Tensor) or x.dim() != 4 or not isinstance(y, Tensor) or y.shape != x.shape[:1] \
                or y.dtype != torch.int64 or y.numel() == 0:
            raise ValueError(f"{name}_x must be (N, 1, H, W) and {name}_y (N,) int64 with N > 0, got "
                             f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}")
    classes = int(max(train_y.max(), test_y.max())) + 1
    kw = dict(epochs=epochs, batch=batch, lr=lr, seed=seed)
    if method == "scratch":
        return accuracy(from_scratch(train_x, train_y, classes, hidden=hidden, **kw), test_x, test_y)
    net = backbone(backbone_state, hidden, seed)
    if method == "probe":
        head = linear_probe(net, train_x, train_y, classes, **kw)
        return accuracy(nn.Sequential(net, head), test_x, test_y)
    return accuracy(fine_tune(net, train_x, train_y, classes, backbone_lr_scale=backbone_lr_scale, **kw),
                    test_x, test_y)


def pretrain(split: OmniglotSplit, epochs: int, *, drawers: int = 20, batch: int = 64, lr: float = 1e-3,
             hidden: int = 64, seed: int = 0) -> tuple[dict[str, Tensor], float]:
    """Train ``Conv4(classes)`` to classify the characters of ``split`` (the background set, 964 characters)
    from their first ``drawers`` drawers; return the backbone's state dict (the head dropped) and the accuracy
    (%) on the held-out drawers ``drawers..19`` (``nan`` when ``drawers = 20``)."""
    if not isinstance(split, OmniglotSplit) or split.num_classes == 0:
        raise ValueError("split must be a non-empty OmniglotSplit (the background characters)")
    total = split.images.shape[1]
    if isinstance(drawers, bool) or not isinstance(drawers, int) or not 1 <= drawers <= total:
        raise ValueError(f"drawers must be an int in 1..{total} (drawers used for pre-training), got {drawers!r}")
    torch.manual_seed(seed)
    net = Conv4(split.num_classes, hidden=_check_int("hidden", hidden, 1), bn=BN)
    labels = torch.arange(split.num_classes)  # (C,)
    x = split.images[:, :drawers].reshape(-1, 1, *split.images.shape[2:])  # (C * drawers, 1, H, W)
    fit(net, torch.optim.Adam(net.parameters(), lr=_check_float("lr", lr)), x, labels.repeat_interleave(drawers),
        epochs=epochs, batch=batch, seed=seed)
    held = split.images[:, drawers:].reshape(-1, 1, *split.images.shape[2:])  # (C * (20 - drawers), 1, H, W)
    val = accuracy(net, held, labels.repeat_interleave(total - drawers)) if drawers < total else math.nan
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


__all__ = ["BN", "METHODS", "FewShotSplit", "accuracy", "backbone", "embed", "few_shot_split", "fine_tune",
           "fine_tune_optimizer", "fingerprint", "fit", "freeze", "from_scratch", "linear_probe", "pretrain",
           "pretrained", "transfer"]
