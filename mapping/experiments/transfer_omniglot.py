"""Inductive and unsupervised transfer from Omniglot's background alphabets to its evaluation alphabets.

:func:`run_inductive` (Pan & Yang 2010, §3): per seed, one :class:`~mapping.nn.conv4.Conv4` is pre-trained to
classify the 964 background characters (:func:`~mapping.experiments.omniglot_backbone.pretrain`); then, for each ``k`` in
``shots``, the evaluation characters (``characters_per_alphabet`` of each of the 20 evaluation alphabets, the
first ones in id order) get ``k`` labelled drawings each (:func:`~mapping.experiments.omniglot_backbone.few_shot_split`,
same seed, the same split for every method) and each method of :data:`~mapping.transfer.inductive.METHODS` is
scored by its accuracy (%) on the other ``20 - k`` drawings. Every transfer run sees about ``transfer_images``
training examples, and at least ``min_epochs`` passes over its training set
(``epochs = max(min_epochs, round(transfer_images / (C * k)))``), so all ``k`` get about the same compute.

:func:`run_unsupervised` (Pan & Yang 2010, §5): per seed, a Conv4 learns to predict rotations of the unlabelled
background drawings (Gidaris et al. 2018); k-means clusters each evaluation alphabet's drawings into as many
clusters as it has characters (:func:`~mapping.transfer.unsupervised.evaluate_unsupervised`), on raw pixels, on a
random Conv4 (batch norm calibrated on the same unlabelled drawings) and on the rotation network.

Learning rates and the transfer schedule were chosen on a validation split of the *background* set only
(pre-training on 25 alphabets, few-shot transfer to the other 5 at ``k`` = 1, 5 and 15), never on the evaluation
alphabets. Training from scratch is the method most limited by compute: on that validation split its 5-shot accuracy
rose from 13% to 46% between 5 and 7 epochs, while fine-tuning moved from 76% to 77%.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import budget
from ..results import metric_key
from ..data.omniglot import OmniglotSplit, load_omniglot
from ..transfer import inductive as ind
from . import omniglot_backbone as ob
from .runner import over_seeds
from ..transfer import unsupervised as uns
from ..stats import seed_summary

REPRESENTATIONS = ("pixels", "random", "rotation")



def inductive_key(method: str, shots: int, name: str = "acc") -> str:
    """The metric ``inductive/{method}/k{shots}/{name}`` (``method``: ``finetune``, ``scratch`` or ``gain``;
    ``name``: ``acc`` or ``ci95``), for the writer and every reader alike."""
    return metric_key("inductive", method, f"k{shots}", name)

@dataclass(frozen=True)
class TransferConfig:
    hidden: int = 64  # Conv4 filters per block, as in the papers
    pretrain_epochs: int = 3
    pretrain_drawers: int = 20  # background drawers used for pre-training; the rest give a validation accuracy
    pretrain_lr: float = 1e-3
    batch: int = 64
    shots: tuple[int, ...] = (1, 2, 5, 10, 15)
    methods: tuple[str, ...] = ind.METHODS
    characters_per_alphabet: int | None = 10  # None: all 659 evaluation characters
    transfer_images: int = 6000  # training examples seen by each transfer run ...
    min_epochs: int = 3  # ... but at least this many passes over the k-shot training set
    probe_lr: float = 3e-2  # learning rate of the new head (probe) ...
    finetune_lr: float = 1e-2  # ... of the fine-tuned head (the backbone at backbone_lr_scale times it) ...
    scratch_lr: float = 3e-3  # ... and of every parameter trained from scratch
    backbone_lr_scale: float = 0.1
    rotation_epochs: int = 1  # passes over the unlabelled background drawings, four rotations of each per batch
    rotation_drawers: int = 10  # background drawers given (unlabelled) to the rotation task and the calibration
    rotation_batch: int = 32  # images per step (x 4 rotations)
    rotation_lr: float = 1e-3
    alphabets: int | None = None  # evaluation alphabets clustered (None: all 20)
    kmeans_n_init: int = 3
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in ind.METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty tuple from {ind.METHODS}, got {self.methods!r}")
        if not self.shots or any(isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 19
                                 for k in self.shots):
            raise ValueError(f"shots must be a non-empty tuple of ints in 1..19, got {self.shots!r}")
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")

    @classmethod
    def for_mode(cls, mode: str | None = None) -> "TransferConfig":
        """``full``: 3 seeds; both experiments together took 12.5 minutes on one shared CPU core (inductive 532 s,
        unsupervised 217 s)."""
        return budget.pick(smoke=cls(hidden=16, pretrain_epochs=1, pretrain_drawers=4, shots=(1, 5),
                                     characters_per_alphabet=3, transfer_images=300, min_epochs=1, rotation_drawers=2,
                                     alphabets=3, kmeans_n_init=1, seeds=(0, 1)),
                           # quick: the pre-training is page 2.4's inductive start (CombineConfig), done once
                           quick=cls(hidden=32, pretrain_epochs=1, pretrain_drawers=15, shots=(1, 5, 15),
                                     characters_per_alphabet=5, transfer_images=1000, rotation_drawers=2,
                                     alphabets=4, seeds=(0, 1)),
                           full=cls(), mode_=mode)

    def lr(self, method: str) -> float:
        return {"probe": self.probe_lr, "finetune": self.finetune_lr, "scratch": self.scratch_lr}[method]


def target_characters(split: OmniglotSplit, per_alphabet: int | None) -> OmniglotSplit:
    """The first ``per_alphabet`` characters (id order) of every alphabet of ``split``; all when ``None``."""
    if per_alphabet is None:
        return split
    rows = [torch.nonzero(split.alphabet_index == a)[:per_alphabet, 0] for a in range(len(split.alphabets))]
    return split.subset(torch.cat(rows))  # (alphabets * per_alphabet,) characters


def run_inductive(config: TransferConfig, root: str | os.PathLike | None = None, progress: bool = False,
                  **load_kwargs: Any) -> dict[str, float]:
    """``inductive/{method}/k{k}/acc`` (mean test accuracy %, over seeds), ``/ci95`` (Student t), ``/seed{s}``;
    ``inductive/gain/k{k}/acc`` = fine-tune minus scratch paired by seed; ``inductive/pretrain/val_acc`` (on held-
    out background drawers; absent when all 20 are used) and ``inductive/seconds``."""
    tic = time.perf_counter()
    source, target = load_omniglot("background", root, **load_kwargs), load_omniglot("evaluation", root, **load_kwargs)
    target = target_characters(target, config.characters_per_alphabet)

    def one_seed(seed: int) -> dict[str, float]:
        state, val, _ = ob.pretrained(source, config.pretrain_epochs, drawers=config.pretrain_drawers,
                                       batch=config.batch, lr=config.pretrain_lr, hidden=config.hidden, seed=seed)
        out = {"inductive/pretrain/val_acc": val} if val == val else {}  # not nan: some drawers were held out
        for k in config.shots:
            split = ob.few_shot_split(target, k, seed)
            epochs = max(config.min_epochs, round(config.transfer_images / split.train_y.numel()))
            for method in config.methods:
                acc = ob.transfer(method, None if method == "scratch" else state, split.train_x, split.train_y,
                                   split.test_x, split.test_y, epochs=epochs, seed=seed, batch=config.batch,
                                   lr=config.lr(method), backbone_lr_scale=config.backbone_lr_scale,
                                   hidden=config.hidden)
                out[inductive_key(method, k)] = acc
                if progress:
                    print(f"seed {seed} k={k} {method}: {acc:.2f}% ({time.perf_counter() - tic:.0f} s)", flush=True)
        return out
    per_seed = over_seeds(config.seeds, one_seed)
    if {"finetune", "scratch"} <= set(config.methods):
        for k in config.shots:
            per_seed[inductive_key("gain", k)] = [a - b for a, b in zip(per_seed[inductive_key("finetune", k)],
                                                                         per_seed[inductive_key("scratch", k)])]
    metrics: dict[str, float] = {}
    metrics.update(seed_summary(per_seed, config.seeds, prefix=lambda key: key.rsplit("/", 1)[0]))
    metrics["inductive/seconds"] = time.perf_counter() - tic
    return metrics


def unlabelled_drawings(split: OmniglotSplit, drawers: int) -> Tensor:
    """The first ``drawers`` drawings of every character, labels dropped: ``(C * drawers, 1, H, W)``."""
    return split.images[:, :drawers].reshape(-1, 1, *split.images.shape[2:])  # (C * drawers, 1, H, W)


def run_unsupervised(config: TransferConfig, root: str | os.PathLike | None = None, progress: bool = False,
                     **load_kwargs: Any) -> dict[str, float]:
    """``unsupervised/{pixels,random,rotation}/{nmi,ari}``: means over seeds of the mean over evaluation
    alphabets, with ``.../{nmi,ari}/ci95`` (Student t) and ``.../{nmi,ari}/seed{s}``; ``unsupervised/seconds``."""
    tic = time.perf_counter()
    source, target = load_omniglot("background", root, **load_kwargs), load_omniglot("evaluation", root, **load_kwargs)
    if config.alphabets is not None:
        target = target.subset(torch.nonzero(target.alphabet_index < config.alphabets)[:, 0])
    pool = unlabelled_drawings(source, config.rotation_drawers)  # (N, 1, 28, 28)
    x = unlabelled_drawings(target, 20)  # (C * 20, 1, 28, 28)
    labels = torch.arange(target.num_classes).repeat_interleave(20)  # (C * 20,)
    groups = target.alphabet_index.repeat_interleave(20)  # (C * 20,)

    def one_seed(seed: int) -> dict[str, float]:
        states = {"pixels": None, "random": uns.random_backbone(pool, hidden=config.hidden, seed=seed),
                  "rotation": uns.pretrain_rotation(pool, config.rotation_epochs, batch=config.rotation_batch,
                                                    lr=config.rotation_lr, hidden=config.hidden, seed=seed)}
        out = {}
        for name, state in states.items():
            scores = uns.evaluate_unsupervised(uns.features(state, x, config.hidden), labels, groups, seed,
                                               config.kmeans_n_init)
            out.update({f"unsupervised/{name}/{score}": scores[score] for score in ("nmi", "ari")})
            if progress:
                print(f"seed {seed} {name}: NMI {scores['nmi']:.3f} ARI {scores['ari']:.3f} "
                      f"({time.perf_counter() - tic:.0f} s)", flush=True)
        return out
    metrics = seed_summary(over_seeds(config.seeds, one_seed), config.seeds, prefix=lambda key: key)
    metrics["unsupervised/seconds"] = time.perf_counter() - tic
    return metrics


LABELS = {"finetune": "fine-tuning", "probe": "linear probe", "scratch": "from scratch"}


def inductive_figure(runs):
    """:func:`run_inductive` drawn for the book's column: test accuracy against ``k`` (log scale), one colour per
    method; ``runs``: ``[(name, metrics, shots, live)]``, a stored run as lines with 95% bands, a live one as
    dashed lines with open markers and error bars. The legend sits under the axes."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .. import plot
    fig, ax = plot.figure(height=3.6)
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(LABELS)}
    for name, metrics, shots, live in runs:
        for method, colour in colours.items():
            mean = [metrics.get(inductive_key(method, k), float("nan")) for k in shots]
            ci = [metrics.get(inductive_key(method, k, "ci95"), 0.0) for k in shots]
            if live:
                ax.errorbar(shots, mean, ci, ls="--", marker="D", ms=5, mfc="none", mew=1.2, lw=1, capsize=2,
                            color=colour)
            else:
                ax.plot(shots, mean, "-", marker="o", ms=4, color=colour)
                ax.fill_between(shots, [a - c for a, c in zip(mean, ci)], [a + c for a, c in zip(mean, ci)],
                                color=colour, alpha=0.12)
    ticks = sorted({k for _, _, shots, _ in runs for k in shots})
    ax.set(xlabel="k, labelled drawings per new character", xscale="log", ylabel="test accuracy (%)")
    ax.set_xticks(ticks, [str(k) for k in ticks])
    ax.minorticks_off()
    handles = [Line2D([], [], color=c, lw=2, label=LABELS[m]) for m, c in colours.items()]
    handles += [Line2D([], [], color="grey", ls="--" if live else "-", marker="D" if live else "o",
                       mfc="none" if live else "grey", label=name) for name, _, _, live in runs]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def shots_table(metrics: dict[str, float], shots: list[int] | tuple[int, ...]) -> str:
    """A markdown table of accuracy (%) ± 95% CI against ``k`` (rows), one column per method of :data:`LABELS`;
    a ``KeyError`` where ``metrics`` lacks one (:func:`inductive_key`)."""
    from ..report import markdown_table, metric
    return markdown_table(["k"] + list(LABELS.values()),
                          [[k] + [metric(metrics, inductive_key(m, k), 1) for m in LABELS] for k in shots])


def gains(metrics: dict[str, float], shots: list[int] | tuple[int, ...]) -> dict[int, tuple[float, float]]:
    """``{k: (gain, ci95)}``: fine-tuning minus from scratch, paired by seed, for each ``k`` of ``shots``."""
    return {k: (metrics[inductive_key("gain", k)], metrics[inductive_key("gain", k, "ci95")]) for k in shots}


def run(config: TransferConfig, root: str | os.PathLike | None = None, progress: bool = False,
        **load_kwargs: Any) -> dict[str, float]:
    """Both experiments: :func:`run_inductive` and :func:`run_unsupervised` metrics in one dict; ``load_kwargs``
    (``strict``, ``resample``, ...) go to :func:`~mapping.data.omniglot.load_omniglot`."""
    return {**run_inductive(config, root, progress, **load_kwargs),
            **run_unsupervised(config, root, progress, **load_kwargs)}


__all__ = ["LABELS", "REPRESENTATIONS", "TransferConfig", "gains", "inductive_figure", "inductive_key", "run",
           "run_inductive", "run_unsupervised", "shots_table", "target_characters", "unlabelled_drawings"]
