"""How the three ideas combine (the article's §2.4): meta-learning started from a transferred or multi-task model.

The article: 三者相辅相成，可以结合起来使用，如用元学习来学习多任务模型，用知识迁移来初始化元学习模型 (*the three complement
each other and can be combined, e.g. meta-learning a multi-task model, or initialising meta-learning by transfer*).
This experiment measures both on one budget. Per seed, three starts for one Prototypical Network (Snell et al. 2017)
on a :class:`~mapping.nn.conv4.Conv4` backbone (batch norm with running statistics, as in the ProtoNets code):

* ``random``: a random initialisation (the usual start of meta-learning);
* ``inductive``: the backbone of a classifier of the background characters (inductive transfer, Pan & Yang 2010,
  :func:`mapping.experiments.omniglot_backbone.pretrain`);
* ``multitask``: the trunk of a hard-sharing network trained with equal weights on three tasks of the same drawings,
  alphabet, character and standardised ink (:func:`mapping.data.omniglot_multitask`, Caruana 1997).

Both pre-trainings see the same images (the first ``pretrain_drawers`` drawers of every background character) for
the same number of epochs at the same learning rate. Then each start is meta-trained for the same ``episodes``
ProtoNet episodes (``train_way``-way ``train_shot``-shot, Adam at ``lr``, the same episode stream for every start)
on all 20 drawers of the background characters, and evaluated at each of ``checkpoints`` (episode 0: the start
alone, used as a ProtoNet embedding) on ``test_episodes`` episodes of each of ``settings`` drawn from the 659
characters of the evaluation alphabets, never seen before (the same episodes for every start), batch norm in eval
mode.

The learning rate (1e-3, halved every ``halve_every`` episodes) is the ProtoNets setting used for the random start on
the book's page 2.1; it was not tuned for the pretrained starts.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import budget
from ..data.omniglot import OmniglotSplit, load_omniglot
from ..data.omniglot_multitask import drawings_and_targets
from ..meta import PrototypicalNetwork
from ..multitask import HardSharing, task_losses
from ..results import combine_key as key
from ..stats import seed_summary, t_ci95
from . import omniglot_backbone as ob
from .omniglot_metric import accuracy as episode_accuracy, embed_all, query_independent
from .runner import over_seeds

STARTS = ("random", "inductive", "multitask")
LABELS = {"random": "random initialisation", "inductive": "inductive transfer (character classifier)",
          "multitask": "multi-task model (alphabet + character + ink)"}

# The map of page 2.4: for each idea (and the book's pages that run it), the methods the book runs. Every name here
# appears on one of those pages (tests/test_transfer_figures.py and the page itself check it).
MAP = {"multi-task learning": ("2.3", ("hard sharing", "soft sharing", "cross-stitch", "MMoE", "RLW", "uncertainty",
                                       "GradNorm", "DWA", "FAMO", "PCGrad", "MGDA", "CAGrad", "UPGrad")),
       "knowledge transfer": ("2.2", ("linear probe", "fine-tuning", "DANN", "MMD", "CORAL", "rotation")),
       "meta-learning": ("2.1, 3, 4", ("Siamese", "Matching", "Prototypical", "MANN", "MAML", "first-order MAML",
                                       "Reptile", "Meta-SGD", "ANIL"))}
MAP_PAGES = {"multi-task learning": ("ch2/multitask", "ch2/multitask_weighting", "ch2/multitask_aggregation",
                                     "ch2/multitask_experiments"), "knowledge transfer": ("ch2/transfer",),
             "meta-learning": ("ch2/metric", "ch2/families", "ch3/index", "ch3/reptile")}
# Where each method is written on the map figure: (x, y) in the figure's data coordinates, and its text.
MAP_TEXT = {
    (-2.0, 1.9): "gradient aggregators\n(PCGrad, MGDA,\nCAGrad, UPGrad)",
    (-2.0, 1.0): "hard / soft sharing,\ncross-stitch, MMoE",
    (-2.0, 0.1): "loss weightings\n(RLW, uncertainty,\nGradNorm, DWA,\nFAMO)",
    (2.0, 1.9): "rotation pretext\n+ k-means",
    (2.0, 1.0): "linear probe,\nfine-tuning",
    (2.0, 0.15): "DANN, MMD,\nCORAL (domain\nadaptation)",
    (0.0, -1.35): "MANN (memory)",
    (0.0, -1.95): "MAML, first-order\nMAML, Reptile,\nMeta-SGD",
    (0.0, -2.6): "Siamese, Matching,\nPrototypical nets",
    (0.0, 1.7): "pretrain on\nmany tasks,\nthen transfer",
    (-1.2, -0.6): "ANIL:\na shared trunk,\na head per task",
    (1.25, -0.6): "meta-learning\nfrom a\npretrained start\n(this page)",
    (0.0, 0.3): "a multi-task\nstart for\nmeta-learning\n(this page)"}


def map_figure():
    """Page 2.4's map: the three ideas as overlapping circles, every method of :data:`MAP` in its region (the
    column's width, text >= 8 pt)."""
    import matplotlib.pyplot as plt

    from .. import plot
    fig, ax = plot.figure(height=6.3)
    centres = {"multi-task learning": ((-1.15, 0.75), (-1.95, 2.85)),
               "knowledge transfer": ((1.15, 0.75), (1.95, 2.85)), "meta-learning": ((0.0, -1.15), (0.0, -3.2))}
    for (idea, (centre, label)), colour in zip(centres.items(), ("tab:green", "tab:orange", "tab:blue")):
        ax.add_patch(plt.Circle(centre, 1.75, color=colour, alpha=0.12))
        ax.add_patch(plt.Circle(centre, 1.75, fill=False, color=colour))
        ax.text(*label, f"{idea} ({MAP[idea][0]})", ha="center", va="center", fontsize=10, weight="bold",
                color=colour)
    for (x, y), text in MAP_TEXT.items():
        ax.text(x, y, text, ha="center", va="center", fontsize=8)
    ax.set(xlim=(-3.4, 3.4), ylim=(-3.45, 3.15), aspect="equal")
    ax.axis("off")
    return fig


def curves_figure(runs, settings):
    """Accuracy against meta-training episodes, one panel per setting (``"5w1s"``), one colour per start; ``runs``:
    ``[(name, metrics, checkpoints, live)]``, a stored run drawn as solid lines with 95% bands, a live one as
    dashed lines. The legend sits under the panels."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .. import plot
    fig, axes = plot.figure(1, len(settings), height=3.4, squeeze=False)
    colours = {start: plt.get_cmap("tab10")(i) for i, start in enumerate(STARTS)}
    for ax, setting in zip(axes[0], settings):
        for name, metrics, checkpoints, live in runs:
            for start in STARTS:
                keys = [(e, key(start, setting, f"ep{e}")) for e in checkpoints]
                have = [(e, k) for e, k in keys if f"{k}/acc" in metrics]
                if not have:
                    continue
                xs = [e for e, _ in have]
                mean = [metrics[f"{k}/acc"] for _, k in have]
                ci = [metrics.get(f"{k}/ci95", 0.0) for _, k in have]
                ax.plot(xs, mean, "--" if live else "-", marker="o", ms=4, color=colours[start])
                if not live:
                    ax.fill_between(xs, [m - c for m, c in zip(mean, ci)], [m + c for m, c in zip(mean, ci)],
                                    color=colours[start], alpha=0.15)
        n, k = setting[:-1].split("w")
        ax.set(xlabel="meta-training episodes", title=f"{n}-way {k}-shot, new alphabets")
    axes[0, 0].set_ylabel("test accuracy (%)")
    handles = [Line2D([], [], color=colours[s], marker="o", ms=4, label=LABELS[s]) for s in STARTS]
    handles += [Line2D([], [], color="grey", ls="--" if live else "-", label=name) for name, _, _, live in runs]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return fig


@dataclass(frozen=True)
class CombineConfig:
    hidden: int = 64  # Conv4 filters per block
    background_characters: int | None = None  # the first ones of the 964 (None: all)
    pretrain_epochs: int = 3
    pretrain_drawers: int = 15  # drawers 0..14 pre-train; all 20 meta-train
    pretrain_lr: float = 1e-3
    batch: int = 64
    episodes: int = 500  # the one meta-training budget, the same for every start
    checkpoints: tuple[int, ...] = (0, 50, 150, 500)
    train_way: int = 20
    train_shot: int = 1
    train_query: int = 5
    lr: float = 1e-3
    halve_every: int = 250
    settings: tuple[tuple[int, int], ...] = ((5, 1), (20, 1))
    test_episodes: int = 600
    test_query: int = 5
    starts: tuple[str, ...] = STARTS
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        bad = [s for s in self.starts if s not in STARTS]
        if bad or not self.starts:
            raise ValueError(f"starts must be a non-empty tuple from {STARTS}, got {self.starts!r}")
        if not self.seeds:
            raise ValueError("seeds must hold at least one seed")
        if not 1 <= self.pretrain_drawers <= 19:
            raise ValueError(f"pretrain_drawers must be in 1..19 (omniglot_multitask keeps one drawer to test), "
                             f"got {self.pretrain_drawers!r}")
        if not self.checkpoints or list(self.checkpoints) != sorted(set(self.checkpoints)) \
                or self.checkpoints[0] < 0 or self.checkpoints[-1] != self.episodes:
            raise ValueError(f"checkpoints must be increasing episode counts ending at episodes={self.episodes}, "
                             f"got {self.checkpoints!r}")

    @classmethod
    def for_mode(cls, mode: str | None = None) -> "CombineConfig":
        return budget.pick(
            smoke=cls(hidden=8, background_characters=40, pretrain_epochs=1, episodes=6, checkpoints=(0, 6),
                      train_way=5, halve_every=100, settings=((5, 1),), test_episodes=20, seeds=(0,)),
            # quick: the inductive start is page 2.2's seed-0 backbone (TransferConfig), pre-trained once per build
            quick=cls(hidden=32, pretrain_epochs=1, episodes=100, checkpoints=(0, 25, 100), halve_every=50,
                      test_episodes=60, seeds=(0,)),
            full=cls(), mode_=mode)


SHORT = {"random": "random", "inductive": "inductive", "multitask": "multi-task"}


def results_table(metrics: dict[str, float], episodes: int, settings: list[str]) -> str:
    """A narrow markdown table of :func:`run`'s metrics: one row per start and setting, the accuracy (± 95% CI)
    at episode 0 and at ``episodes``, and the paired difference to the random start (``—`` for random)."""
    from ..report import fmt, markdown_table, metric
    rows = []
    for start in STARTS:
        for s in settings:
            k = key(start, s)
            gain = fmt(metrics.get(f"{k}/gain"), metrics.get(f"{k}/gain_ci95"), 1) if start != "random" else "—"
            rows.append([SHORT[start], s, metric(metrics, f"{k}/ep0/acc", 1),
                         metric(metrics, f"{k}/ep{episodes}/acc", 1), gain])
    return markdown_table(["start", "task", "episode 0", f"episode {episodes}", "minus random"], rows)


def multitask_data(split: OmniglotSplit, drawers: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The first ``drawers`` drawings of every character of ``split`` with the targets of
    :func:`mapping.data.omniglot_multitask` (alphabet, character, ink standardised over these drawings):
    ``x (C * drawers, 1, H, W)`` and ``{task: (C * drawers,) or (C * drawers, 1)}``."""
    x, y = drawings_and_targets(split, torch.arange(drawers))  # (N, 1, H, W), {task: (N,) or (N, 1)}
    y["ink"] = (y["ink"] - y["ink"].mean()) / y["ink"].std()  # (N, 1) standardised over these drawings
    return x, y


def pretrain_multitask(split: OmniglotSplit, epochs: int, *, drawers: int = 15, batch: int = 64, lr: float = 1e-3,
                       hidden: int = 64, seed: int = 0) -> tuple[dict[str, Tensor], list[float]]:
    """Hard sharing (a ``Conv4`` trunk, one linear head per task) trained with equal weights, Adam at ``lr``, on
    :func:`multitask_data`; returns the trunk's state dict, loadable by :func:`mapping.experiments.omniglot_backbone.backbone`,
    and the mean summed loss of each epoch."""
    if not isinstance(split, OmniglotSplit) or split.num_classes == 0:
        raise ValueError("split must be a non-empty OmniglotSplit (the background characters)")
    for name, value, high in (("epochs", epochs, None), ("drawers", drawers, split.images.shape[1]),
                              ("batch", batch, None)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high and value > high):
            raise ValueError(f"{name} must be an int in 1..{high or 'inf'}, got {value!r}")
    x, y = multitask_data(split, drawers)
    torch.manual_seed(seed)
    trunk = ob.backbone(None, hidden, seed)
    classes = {"alphabet": len(split.alphabets), "character": split.num_classes, "ink": 1}
    model = HardSharing(trunk, {t: nn.Linear(trunk.embedding_dim, n) for t, n in classes.items()})
    loss_fns = {"alphabet": F.cross_entropy, "character": F.cross_entropy, "ink": F.mse_loss}
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    history = []
    for _ in range(epochs):
        total, steps = 0.0, 0
        for i in torch.randperm(len(x), generator=g).split(batch):
            loss = task_losses(model(x[i]), {t: v[i] for t, v in y.items()}, loss_fns).sum()  # () equal weights
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        history.append(total / steps)
    return {n: t.clone() for n, t in trunk.state_dict().items()}, history


def starting_states(config: CombineConfig, background: OmniglotSplit, seed: int) -> dict[str, dict | None]:
    """``{start: backbone state dict or None}`` for ``config.starts``, with the pre-training seconds of each in
    ``["seconds"]``. The inductive start comes from :func:`mapping.experiments.omniglot_backbone.pretrained` (computed once per
    configuration, its seconds those of that computation)."""
    states: dict[str, Any] = {"seconds": {}}
    kw = dict(drawers=config.pretrain_drawers, batch=config.batch, lr=config.pretrain_lr, hidden=config.hidden,
              seed=seed)
    for start in config.starts:
        tic = time.perf_counter()
        if start == "random":
            states[start] = None
        elif start == "inductive":  # shared with page 2.2 where the configurations agree
            states[start], _, seconds = ob.pretrained(background, config.pretrain_epochs, **kw)
        else:
            states[start] = pretrain_multitask(background, config.pretrain_epochs, **kw)[0]
        states["seconds"][start] = seconds if start == "inductive" else time.perf_counter() - tic
    return states


def evaluate(model: PrototypicalNetwork, config: CombineConfig, test: OmniglotSplit, seed: int) -> dict[str, float]:
    """``{"{n}w{k}s": accuracy %}`` on ``config.test_episodes`` episodes per setting (the same for every start)."""
    out = {}
    model.eval()  # every test image embedded once, for all settings (the same episodes as embedding per setting)
    z = embed_all(model.backbone, test.images) if query_independent(model) else None  # (C, 20, d)
    for n, k in config.settings:
        g = torch.Generator().manual_seed(seed + 1000 * n + k)
        acc = episode_accuracy(model, test.sampler(n, k, config.test_query), config.test_episodes, g,
                               embedded=z)  # (E,)
        out[f"{n}w{k}s"] = 100 * acc.mean().item()
    return out


def meta_train(state: dict[str, Tensor] | None, config: CombineConfig, background: OmniglotSplit,
               test: OmniglotSplit, seed: int) -> dict[int, dict[str, float]]:
    """ProtoNet meta-training from ``state`` (None: random); ``{episode: evaluate(...)}`` at every checkpoint."""
    model = PrototypicalNetwork(ob.backbone(state, config.hidden, seed))
    sampler = background.sampler(config.train_way, config.train_shot, config.train_query)
    g = torch.Generator().manual_seed(seed)  # the same episodes for every start
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.halve_every, gamma=0.5)
    curve = {}
    for episode in range(config.episodes + 1):
        if episode in config.checkpoints:
            curve[episode] = evaluate(model, config, test, seed)
        if episode == config.episodes:
            break
        model.train()
        loss = model.meta_loss(sampler.sample(1, g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return curve


def run(config: CombineConfig, root: str | os.PathLike | None = None, progress: bool = False,
        **load_kwargs: Any) -> dict[str, float]:
    """``combine/{start}/{n}w{k}s/ep{e}/acc`` (mean over seeds, %), ``/ci95`` (Student t; absent with one seed),
    ``/seed{s}``; the paired difference to the random start at the end of the budget,
    ``combine/{start}/{n}w{k}s/gain`` and ``/gain_ci95`` (absent with one seed); ``combine/{start}/pretrain_seconds``
    and ``combine/{start}/seconds`` (meta-training and evaluation), means over seeds."""
    background = load_omniglot("background", root, **load_kwargs)
    if config.background_characters is not None:
        background = background.subset(slice(0, config.background_characters))
    test = load_omniglot("evaluation", root, **load_kwargs)

    def one_seed(seed: int) -> dict[str, float]:
        states, out = starting_states(config, background, seed), {}
        for start in config.starts:
            tic = time.perf_counter()
            curve = meta_train(states[start], config, background, test, seed)
            out[key(start, "seconds")] = time.perf_counter() - tic
            out[key(start, "pretrain_seconds")] = states["seconds"][start]
            out.update({key(start, setting, f"ep{episode}", "acc"): acc
                        for episode, accs in curve.items() for setting, acc in accs.items()})
            if progress:
                print(f"seed {seed} {start}: {curve[config.episodes]}", flush=True)
        return out
    per_seed = over_seeds(config.seeds, one_seed)
    seconds = {k: v for k, v in per_seed.items() if k.endswith("seconds")}
    metrics = {k: sum(v) / len(v) for k, v in seconds.items()}
    metrics.update(seed_summary({k: v for k, v in per_seed.items() if k not in seconds}, config.seeds))
    if "random" in config.starts:
        for start in config.starts:
            for n, k in config.settings:
                end = f"{n}w{k}s/ep{config.episodes}/acc"
                diff = torch.tensor(per_seed[key(start, end)], dtype=torch.float64) \
                    - torch.tensor(per_seed[key("random", end)], dtype=torch.float64)
                mean, half = t_ci95(diff)
                metrics[key(start, f"{n}w{k}s", "gain")] = mean
                if len(diff) > 1:
                    metrics[key(start, f"{n}w{k}s", "gain_ci95")] = half
    return metrics


__all__ = ["CombineConfig", "LABELS", "MAP", "MAP_PAGES", "MAP_TEXT", "SHORT", "STARTS", "curves_figure", "evaluate",
           "map_figure", "meta_train", "multitask_data", "pretrain_multitask", "results_table", "run",
           "starting_states"]
