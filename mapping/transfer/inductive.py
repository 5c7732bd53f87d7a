"""Inductive transfer on the user's own networks: a feature extractor trained on a source task, reused on a target
task with a few labelled examples.

Pan & Yang 2010 ("A survey on transfer learning", IEEE TKDE 22(10), §2.3 and §3): transfer is *inductive*
when the target task differs from the source task and some labelled target data are available. ``net`` below is
any ``nn.Module`` mapping a batch of inputs ``(N, ...)`` to features ``(N, d)``; the data are tensors ``x (N, ...)``
and class labels ``y (N,)`` int64. Three ways of using the source, all through :func:`transfer_accuracy`:

* ``"probe"`` (:func:`linear_probe`): the pre-trained extractor is frozen and only a new linear head is trained;
* ``"finetune"`` (:func:`fine_tune`): extractor and new head are trained together, the extractor at a lower
  learning rate (``backbone_lr_scale`` = 0.1 times the head's, two param groups of one Adam);
* ``"scratch"``: the same network from a random initialisation, every parameter at the head's rate: the baseline
  that says what the source was worth (:func:`fine_tune` with ``backbone_lr_scale=1``).

Batch-norm policy: training (:func:`fit`) runs in ``train()`` mode (batch statistics, running averages updated;
fine-tuning thus re-estimates them on the target data); every evaluation runs in ``eval()`` mode, so that a test
prediction depends on its own input only. The probe's extractor stays in ``eval()`` mode throughout: its
parameters *and* buffers are bit-identical afterwards (:func:`freeze`), and its features are computed once and
cached, which is exactly training the head on a frozen network.

The book's Omniglot backbones (a :class:`~mapping.nn.conv4.Conv4` pre-trained on the background alphabets, the
few-shot splits of new characters) are in :mod:`mapping.experiments.omniglot_backbone`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import stats
from ..checks import check_choice, check_int, check_number

METHODS = ("probe", "finetune", "scratch")
BN = "running"  # the batch-norm policy of the book's Conv4 backbones (rotation, Omniglot): nn.BatchNorm2d


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module`` in place: no gradients, ``eval()`` mode (batch norm uses, never updates, its running
    statistics). Returns it. A later ``.train()`` call would switch batch norm back to batch statistics, so
    callers keep a frozen module out of any parent that is put in ``train()`` mode."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be an nn.Module, got {type(module).__name__}")
    module.requires_grad_(False)
    return module.eval()


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *, epochs: int, batch: int,
        seed: int) -> nn.Module:
    """Minimise the cross-entropy of ``model(x)`` against ``y`` with ``optimizer``: ``epochs`` passes over
    shuffled mini-batches of ``batch`` examples (the shuffles seeded by ``seed``), in ``train()`` mode."""
    check_int("epochs", epochs, 1)
    check_int("batch", batch, 1)
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
    """Accuracy of ``model`` in ``eval()`` mode on ``(x, y)``, a fraction (:func:`mapping.stats.accuracy`)."""
    return stats.accuracy(embed(model, x), y)


def feature_dim(net: nn.Module, x: Tensor) -> int:
    """The size ``d`` of ``net``'s features: ``net.embedding_dim`` if it has one, else read from ``net(x[:1])``
    (in ``eval()`` mode, without gradients: no batch-norm statistic changes)."""
    dim = getattr(net, "embedding_dim", None)
    return dim if isinstance(dim, int) else embed(net, x[:1]).reshape(1, -1).shape[1]


def linear_probe(net: nn.Module, x: Tensor, y: Tensor, classes: int, *, epochs: int, batch: int = 64,
                 lr: float = 1e-3, seed: int = 0) -> nn.Linear:
    """Train a new ``Linear(d, classes)`` on the frozen ``net``'s features ``(N, d)``; ``net`` is frozen in place
    (:func:`freeze`) and left bit-identical. The features are computed once, in ``eval()`` mode."""
    freeze(net)
    features = embed(net, x)  # (N, d)
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], check_int("classes", classes, 1))
    fit(head, torch.optim.Adam(head.parameters(), lr=check_number("lr", lr, strict=True)), features, y,
        epochs=epochs, batch=batch, seed=seed)
    return head


def fine_tune_optimizer(net: nn.Module, head: nn.Module, lr: float, backbone_lr_scale: float) -> torch.optim.Adam:
    """Adam with two param groups: ``head`` at ``lr`` (group 0), ``net`` at ``lr * backbone_lr_scale`` (group 1)."""
    lr = check_number("lr", lr, strict=True)
    scale = check_number("backbone_lr_scale", backbone_lr_scale, strict=True)
    return torch.optim.Adam([{"params": list(head.parameters()), "lr": lr},
                             {"params": list(net.parameters()), "lr": lr * scale}])


def fine_tune(net: nn.Module, x: Tensor, y: Tensor, classes: int, *, epochs: int, batch: int = 64,
              lr: float = 1e-3, backbone_lr_scale: float = 0.1, seed: int = 0) -> nn.Sequential:
    """Train ``net`` (in place) and a new linear head together; the extractor's rate is ``backbone_lr_scale * lr``
    (:func:`fine_tune_optimizer`; 1 trains a freshly initialised ``net`` from scratch). Returns
    ``Sequential(net, head)`` in ``eval()`` mode."""
    net.requires_grad_(True)
    dim = feature_dim(net, x)
    torch.manual_seed(seed)
    head = nn.Linear(dim, check_int("classes", classes, 1))
    model = nn.Sequential(net, head)
    return fit(model, fine_tune_optimizer(net, head, lr, backbone_lr_scale), x, y, epochs=epochs, batch=batch,
               seed=seed)


def check_labelled(name: str, x: object, y: object) -> None:
    """``x``: a tensor ``(N, ...)``; ``y``: its ``(N,)`` int64 class labels, ``N > 0``."""
    if not isinstance(x, Tensor) or x.dim() < 2 or not isinstance(y, Tensor) or y.shape != x.shape[:1] \
            or y.dtype != torch.int64 or y.numel() == 0:
        raise ValueError(f"{name}_x must be (N, ...) and {name}_y (N,) int64 with N > 0, got "
                         f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}")


def transfer_accuracy(method: str, net: nn.Module, train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor,
                      *, epochs: int, seed: int = 0, batch: int = 64, lr: float = 1e-3,
                      backbone_lr_scale: float = 0.1) -> float:
    """Test accuracy (a fraction) of ``method`` (:data:`METHODS`) trained on ``(train_x, train_y)`` with the extractor
    ``net``: pre-trained for ``probe`` and ``finetune``, freshly initialised for ``scratch`` (every parameter
    at ``lr``). Classes are ``0..max(train_y, test_y)``."""
    check_choice("method", method, METHODS)
    if not isinstance(net, nn.Module):
        raise ValueError(f"net must be an nn.Module (the feature extractor), got {type(net).__name__}")
    check_labelled("train", train_x, train_y)
    check_labelled("test", test_x, test_y)
    classes = int(max(train_y.max(), test_y.max())) + 1
    kw = dict(epochs=epochs, batch=batch, lr=lr, seed=seed)
    if method == "probe":
        head = linear_probe(net, train_x, train_y, classes, **kw)
        return accuracy(nn.Sequential(net, head), test_x, test_y)
    scale = 1.0 if method == "scratch" else backbone_lr_scale
    return accuracy(fine_tune(net, train_x, train_y, classes, backbone_lr_scale=scale, **kw), test_x, test_y)


__all__ = ["BN", "METHODS", "accuracy", "check_labelled", "embed", "feature_dim", "fine_tune", "fine_tune_optimizer",
           "fit", "freeze", "linear_probe", "transfer_accuracy"]
