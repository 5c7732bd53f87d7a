"""Chapter 1's three limitations of learning one task from scratch (the article's §1.2), each measured.

* **Data dependence** (§1.2.1 数据依赖性), :func:`data_dependence`: accuracy of the same network trained from
  scratch on ``n`` labelled digits per class, for growing ``n`` (the source half of
  :func:`mapping.experiments.digits_da.domains`: plain scikit-learn digits, 8x8, on three channels), tested on the
  plain test digits. Every size gets the same number of Adam steps, so only the data changes. Each seed draws its
  own ``n`` digits of each class (``subset="seeded"``; nested: a seed's smaller sets are part of its larger ones),
  so the interval over seeds covers which digits were labelled, not only the initialisation. With the same digits
  for every seed (``subset="first"``, the stored runs made before this option) the seeds' accuracies differ by a
  digit or two of the 450 test digits at large ``n``, and at ``n = 40`` all three came out equal (95.1%: 22
  errors each, on different digits), an interval of zero.
* **Poor generalisation** (§1.2.2 泛化能力不足), :func:`domain_shift`: the network trained on all plain source digits,
  tested on the plain test digits and on each colour shift of them (:func:`mapping.data.shifted_digits`): the same
  digits, the same labels, another distribution.
* **No transfer** (§1.2.3 缺乏迁移学习能力), :func:`new_alphabet`: each of Omniglot's evaluation alphabets (never seen
  in pre-training) is a new ``C``-way problem with ``k`` labelled drawings per character; a network trained from
  scratch against one fine-tuned from a classifier of the 964 background characters
  (:func:`mapping.experiments.omniglot_backbone.transfer`, with :class:`~mapping.experiments.transfer_omniglot.TransferConfig`'s
  learning rates, chosen on the background set only). Every run takes about ``transfer_steps`` optimizer steps,
  whatever ``k``: with a budget of training *examples* instead, a 1-shot run (one batch per epoch) takes more steps
  than a 5-shot one, and training from scratch, the method most limited by steps, then came out worse at ``k = 5``
  than at ``k = 1`` (measured: 26% and 22% averaged over the 20 alphabets, 2000 examples per run).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch

from .checks import check_ints
from .. import budget
from ..results import metric_key
from ..data.moons import SHIFT_KINDS, shifted_digits
from ..data.omniglot import load_omniglot
from . import omniglot_backbone as ob
from . import digits_da as da
from ..stats import accuracy, seed_summary
from .transfer_omniglot import TransferConfig
from .runner import over_seeds


SUBSETS = ("seeded", "first")


@dataclass(frozen=True)
class BackgroundConfig:
    per_class: tuple[int, ...] = (1, 2, 5, 10, 20, 40, 60)  # labelled digits per class (60: all of the rarest class)
    steps: int = 1500  # Adam steps of every digits run, whatever its size
    shots: tuple[int, ...] = (1, 5)  # labelled drawings per character of the new alphabets
    alphabets: int | None = None  # evaluation alphabets used (None: all 20)
    hidden: int = 64  # Conv4 filters of the Omniglot networks
    pretrain_epochs: int = 3
    pretrain_characters: int | None = None  # the first background characters pre-trained on (None: all 964)
    pretrain_drawers: int = 20  # background drawers pre-trained on (quick: 15, 2.2's and 2.4's, pre-trained once)
    transfer_steps: int = 150  # optimizer steps of each Omniglot run (at least min_epochs passes)
    batch: int = 64
    min_epochs: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)
    subset: str = "seeded"  # the digits of each class a seed trains on: a draw of its own, or "first" (all the same)

    def __post_init__(self) -> None:
        if self.subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS}, got {self.subset!r}")
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        if not self.per_class or any(isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 60
                                     for n in self.per_class):
            raise ValueError(f"per_class must be a non-empty tuple of ints in 1..60 (the source half has 60 "
                             f"digits of its rarest class), got {self.per_class!r}")
        check_ints(self, positive=("steps", "transfer_steps", "batch", "min_epochs", "pretrain_epochs", "hidden"))

    @classmethod
    def for_mode(cls, mode: str | None = None) -> "BackgroundConfig":
        return budget.pick(smoke=cls(per_class=(1, 10), steps=30, shots=(1,), alphabets=2, hidden=8,
                                     pretrain_epochs=1, pretrain_characters=50, transfer_steps=5, min_epochs=1,
                                     seeds=(0,)),
                           # quick: the backbone of 2.2 and 2.4 (TransferConfig), pre-trained once per build
                           quick=cls(per_class=(1, 5, 20, 60), steps=500, alphabets=3, hidden=32,
                                     pretrain_epochs=1, pretrain_drawers=15, transfer_steps=100, seeds=(0,)),
                           full=cls(), mode_=mode)


def balanced_subset(y: torch.Tensor, per_class: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``per_class`` examples of each class in ``y (N,)``, class by class: ``(classes * n,)``. Without
    ``generator`` the first ones of each class; with it a random draw of each class (in index order within the
    class). Generators in the same state draw nested sets: the draw for a smaller ``per_class`` is part of that for
    a larger one."""
    rows = [torch.nonzero(y == c)[:, 0] for c in y.unique()]
    short = [c for c, r in zip(y.unique().tolist(), rows) if len(r) < per_class]
    if short:
        raise ValueError(f"per_class={per_class} exceeds the examples of classes {short}")
    if generator is not None:
        rows = [r[torch.randperm(len(r), generator=generator)[:per_class]].sort().values for r in rows]
    return torch.cat([r[:per_class] for r in rows])


def data_key(n: int, *rest: str) -> str:
    """``data/n{n}/...`` of :func:`data_dependence`: ``data_key(n, "acc")``, ``data_key(n, "ci95")``."""
    return metric_key("data", f"n{n}", *rest)


def shift_key(kind: str, *rest: str) -> str:
    """``shift/{kind}/...`` of :func:`domain_shift`: ``shift_key(kind, "acc")``, ``shift_key(kind, "drop")``,
    ``shift_key(kind, "drop", "ci95")``."""
    return metric_key("shift", kind, *rest)


def alphabet_key(method: str, shots: int, *rest: str) -> str:
    """``alphabet/{method}/k{shots}/...`` of :func:`new_alphabet`: ``alphabet_key("finetune", k, "acc")``;
    the gain has no ``/acc``: ``alphabet_key("gain", k)``, ``alphabet_key("gain", k, "ci95")``."""
    return metric_key("alphabet", method, f"k{shots}", *rest)


def per_alphabet_key(name: str, method: str, shots: int) -> str:
    """``alphabet/{name}/{method}/k{shots}`` of :func:`new_alphabet`: one alphabet's accuracy (%), mean over seeds."""
    return metric_key("alphabet", name, method, f"k{shots}")


def alphabet_accuracies(metrics: dict[str, float], shots: int) -> dict[str, dict[str, float]]:
    """``{alphabet: {"scratch": %, "finetune": %}}`` at ``shots`` drawings per character, alphabets sorted by name;
    a ``KeyError`` where ``metrics`` has none, or an alphabet lacks a method."""
    names = sorted({k.split("/")[1] for k in metrics
                    if k.count("/") == 3 and k == per_alphabet_key(k.split("/")[1], "finetune", shots)})
    if not names:
        raise KeyError(f"no {per_alphabet_key('<alphabet>', 'finetune', shots)!r} in the metrics")
    return {a: {m: metrics[per_alphabet_key(a, m, shots)] for m in ("scratch", "finetune")} for a in names}


def data_dependence(config: BackgroundConfig) -> dict[str, float]:
    """``data/n{n}/acc``: plain test accuracy (%) of :class:`~mapping.experiments.digits_da.DigitsNet` trained on
    ``n`` digits per class, ``config.steps`` steps for every ``n``; with ``config.subset == "seeded"`` each seed
    trains on its own draw of the digits (nested over ``n``), with ``"first"`` every seed on the first ones."""
    train_config = da.DigitsDAConfig(steps=config.steps, methods=("source_only",))

    def one_seed(seed: int) -> dict[str, float]:
        data, out = da.domains("texture", seed), {}
        for n in config.per_class:
            draw = torch.Generator().manual_seed(seed) if config.subset == "seeded" else None  # same for every n
            i = balanced_subset(data.source_y, n, draw)  # (10 n,)
            small = dataclasses.replace(data, source_x=data.source_x[i], source_y=data.source_y[i])
            model = da.train("source_only", small, train_config, seed)
            out[data_key(n, "acc")] = 100 * accuracy(model(data.test_source_x), data.test_y)
        return out
    return seed_summary(over_seeds(config.seeds, one_seed), config.seeds)


def domain_shift(config: BackgroundConfig) -> dict[str, float]:
    """``shift/plain/acc`` and ``shift/{kind}/acc`` for each of :data:`~mapping.data.moons.SHIFT_KINDS`: test
    accuracy (%) of the network trained on all plain source digits; ``shift/{kind}/drop``: plain minus shifted,
    paired by seed."""
    train_config = da.DigitsDAConfig(steps=config.steps, methods=("source_only",))

    def one_seed(seed: int) -> dict[str, float]:
        data = da.domains("texture", seed)
        model = da.train("source_only", data, train_config, seed)
        plain = 100 * accuracy(model(data.test_source_x), data.test_y)
        out = {"shift/plain/acc": plain}
        for kind in SHIFT_KINDS:
            test = shifted_digits("test", kind, seed)
            acc = 100 * accuracy(model(test.target_x), test.target_y)
            out[shift_key(kind, "acc")], out[shift_key(kind, "drop")] = acc, plain - acc
        return out
    return seed_summary(over_seeds(config.seeds, one_seed), config.seeds)


def new_alphabet(config: BackgroundConfig, root: str | os.PathLike | None = None,
                 **load_kwargs: Any) -> dict[str, float]:
    """``alphabet/{scratch,finetune}/k{k}/acc``: accuracy (%) on the held-out drawings, averaged over the evaluation
    alphabets (each its own ``C``-way problem), and ``alphabet/gain/k{k}`` (fine-tune minus scratch, paired by
    seed); per alphabet ``alphabet/{name}/{method}/k{k}`` (mean over seeds); ``alphabet/seconds``."""
    tic = time.perf_counter()
    lrs = TransferConfig()
    source = load_omniglot("background", root, **load_kwargs)
    if config.pretrain_characters is not None:
        source = source.subset(slice(0, config.pretrain_characters))
    target = load_omniglot("evaluation", root, **load_kwargs)
    names = target.alphabets[:config.alphabets] if config.alphabets is not None else target.alphabets
    per_seed: dict[str, list[float]] = {}
    per_alphabet: dict[str, list[float]] = {}
    for seed in config.seeds:
        state, _, _ = ob.pretrained(source, config.pretrain_epochs, drawers=config.pretrain_drawers,
                                     batch=config.batch, hidden=config.hidden, seed=seed)  # once per configuration
        for k in config.shots:
            means = {"scratch": [], "finetune": []}
            for a, name in enumerate(names):
                alphabet = target.subset(torch.nonzero(target.alphabet_index == a)[:, 0])
                split = ob.few_shot_split(alphabet, k, seed)
                epochs = max(config.min_epochs,  # about transfer_steps steps, whatever k
                             math.ceil(config.transfer_steps / math.ceil(split.train_y.numel() / config.batch)))
                for method in means:
                    acc = ob.transfer(method, None if method == "scratch" else state, split.train_x, split.train_y,
                                       split.test_x, split.test_y, epochs=epochs, seed=seed, batch=config.batch,
                                       lr=lrs.lr(method),
                                       backbone_lr_scale=lrs.backbone_lr_scale, hidden=config.hidden)
                    means[method].append(acc)
                    per_alphabet.setdefault(per_alphabet_key(name, method, k), []).append(acc)
            for method, accs in means.items():
                per_seed.setdefault(alphabet_key(method, k, "acc"), []).append(sum(accs) / len(accs))
            per_seed.setdefault(alphabet_key("gain", k), []).append(
                per_seed[alphabet_key("finetune", k, "acc")][-1] - per_seed[alphabet_key("scratch", k, "acc")][-1])
    metrics = seed_summary(per_seed, config.seeds)
    metrics.update({key: sum(v) / len(v) for key, v in per_alphabet.items()})
    metrics["alphabet/seconds"] = time.perf_counter() - tic
    return metrics


def run(config: BackgroundConfig, root: str | os.PathLike | None = None, **load_kwargs: Any) -> dict[str, float]:
    """All three experiments' metrics in one dict."""
    return {**data_dependence(config), **domain_shift(config), **new_alphabet(config, root, **load_kwargs)}


__all__ = ["BackgroundConfig", "SUBSETS", "alphabet_accuracies", "alphabet_key", "balanced_subset", "data_dependence",
           "data_key", "domain_shift", "new_alphabet", "per_alphabet_key", "run", "shift_key"]
