"""Multi-task learning on MultiDigits (left and right digit of one canvas) and on GradNorm's toy regression.

One training function for every method, so that methods differ only in what the issue says they differ in:

* ``single``: one network per task (the single-task baseline of Sener & Koltun 2018, Table 3);
* architectures trained with equal weights: ``hard``, ``soft``, ``cross_stitch``, ``mmoe``;
* the hard-sharing trunk with a loss weighting (``rlw``, ``uncertainty``, ``gradnorm``, ``dwa``, ``famo``)
  or a gradient aggregator on the shared parameters (``pcgrad``, ``cagrad``, ``upgrad``) or on the shared
  representation (``mgda_ub``).

Every network of a run has the same trunk shape, Adam, the same epochs and batches; each method runs for every
seed and is scored by test accuracy per task. Two trunks (``MultitaskConfig.trunk``):

* ``"mlp"``: 144-256-256 (ReLU) on the flattened 12x12 canvas;
* ``"conv"``: a small LeNet-style net, as Sener & Koltun's MultiMNIST network is: two 3x3 convolutions
  (``filters`` channels, ReLU), a 2x2 max-pool, then a 256-unit ReLU layer. Its filters are translation
  equivariant: the strokes of the left digit and of the right one are the same features at other places, which
  an MLP's position-specific weights cannot share.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import budget
from ..results import metric_key
from ..data.multidigits import MultiDigits
from ..data.multitask_toys import gradnorm_toy
from ..multitask import aggregators as agg
from ..multitask import weighting as wt
from ..multitask.architectures import CrossStitch, HardSharing, MMoE, SoftSharing, task_losses
from ..multitask.backward import mtl_backward
from ..stats import accuracy as accuracy_of, t_ci95

ARCHITECTURES = ("single", "hard", "soft", "cross_stitch", "mmoe")
WEIGHTINGS = ("rlw", "uncertainty", "gradnorm", "dwa", "famo")
AGGREGATORS = ("pcgrad", "mgda_ub", "cagrad", "upgrad")
METHODS = ARCHITECTURES + WEIGHTINGS + AGGREGATORS
ONE_TRUNK = ("hard",) + WEIGHTINGS + AGGREGATORS  # the methods that train one shared trunk for both tasks
LABELS = {"single": "single-task models", "hard": "hard sharing, equal weights",
          "soft": "soft sharing (L2), equal weights", "cross_stitch": "cross-stitch, equal weights",
          "mmoe": "MMoE, equal weights", "rlw": "hard + random loss weighting",
          "uncertainty": "hard + uncertainty weighting", "gradnorm": "hard + GradNorm",
          "dwa": "hard + dynamic weight average", "famo": "hard + FAMO", "pcgrad": "hard + PCGrad",
          "mgda_ub": "hard + MGDA-UB", "cagrad": "hard + CAGrad", "upgrad": "hard + UPGrad"}
SHORT = {"single": "single-task", "hard": "hard", "soft": "soft (L2)", "cross_stitch": "cross-stitch", "mmoe": "MMoE",
         "rlw": "hard + RLW", "uncertainty": "hard + uncertainty", "gradnorm": "hard + GradNorm", "dwa": "hard + DWA",
         "famo": "hard + FAMO", "pcgrad": "hard + PCGrad", "mgda_ub": "hard + MGDA-UB", "cagrad": "hard + CAGrad",
         "upgrad": "hard + UPGrad"}  # LABELS for narrow tables: the architectures train with equal weights
TASKS = ("left", "right")
TRUNKS = ("conv", "mlp")
GRADNORM_LR = 0.025  # learning rate of GradNorm's task weights (LibMTL's default)


@dataclass(frozen=True)
class MultitaskConfig:
    epochs: int = 30
    batch: int = 256
    lr: float = 1e-3
    hidden: int = 256
    train_pairs: int = 10_000
    test_pairs: int = 2_000
    soft_penalty: float = 1e-3  # lambda of the L2 coupling of soft sharing
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    methods: tuple[str, ...] = METHODS
    trunk: str = "conv"  # "conv" or "mlp"
    filters: int = 32  # channels of the conv trunk's two convolutions

    def __post_init__(self) -> None:
        if self.trunk not in TRUNKS:
            raise ValueError(f"trunk must be one of {TRUNKS}, got {self.trunk!r}")

    @classmethod
    def for_mode(cls, mode: str | None = None, trunk: str | None = None) -> "MultitaskConfig":
        """The full run trains the conv trunk over five seeds (``reproduce`` adds the MLP trunk); the book's live
        runs train the MLP (seconds). ``trunk`` picks the trunk: ``"conv"`` in the smoke and quick modes is the
        book's live conv run (the single-task and hard-sharing networks on fewer pairs and epochs); in the full
        mode either trunk is the full run's."""
        if trunk not in (None, *TRUNKS):
            raise ValueError(f"trunk must be one of {TRUNKS}, got {trunk!r}")
        if trunk == "conv":
            live = dict(methods=("single", "hard"), trunk="conv")
            return budget.pick(smoke=cls(epochs=1, train_pairs=500, test_pairs=500, seeds=(0, 1), **live),
                               quick=cls(epochs=3, train_pairs=4_000, seeds=(0, 1, 2), **live), full=cls(),
                               mode_=mode)
        config = budget.pick(smoke=cls(epochs=1, train_pairs=1_000, test_pairs=500, seeds=(0, 1), trunk="mlp"),
                             quick=cls(epochs=5, seeds=(0, 1, 2), trunk="mlp"), full=cls(), mode_=mode)
        return replace(config, trunk="mlp") if trunk == "mlp" else config


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Flatten, then Linear-ReLU blocks: ``sizes = (in, h1, h2, ...)``."""
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


def conv(filters: int, hidden: int, canvas: int = 12) -> nn.Sequential:
    """The conv trunk: two 3x3 convolutions (padding 1, ReLU), 2x2 max-pool, flatten, ``hidden`` ReLU units."""
    return nn.Sequential(*conv_blocks(filters, hidden, canvas))


def conv_blocks(filters: int, hidden: int, canvas: int = 12) -> list[nn.Sequential]:
    """:func:`conv` as two blocks (convolutions and pool; the dense layer), where cross-stitch units go."""
    features = filters * (canvas // 2) ** 2
    return [nn.Sequential(nn.Conv2d(1, filters, 3, padding=1), nn.ReLU(), nn.Conv2d(filters, filters, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()),  # (N, filters * (canvas / 2) ** 2)
            nn.Sequential(nn.Linear(features, hidden), nn.ReLU())]  # (N, hidden)


def trunk_blocks(kind: str, inputs: int, hidden: int, filters: int = 32) -> list[nn.Sequential]:
    """One trunk of ``kind`` as two blocks; ``inputs`` is the canvas's pixel count."""
    if kind == "conv":
        return conv_blocks(filters, hidden, math.isqrt(inputs))
    return [mlp((inputs, hidden)), nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())]


def build(method: str, inputs: int, hidden: int, classes: int, tasks=TASKS, trunk: str = "mlp",
          filters: int = 32) -> nn.Module:
    """The network of ``method``: every trunk, column or expert is a ``trunk`` (``"mlp"``: 144-hidden-hidden;
    ``"conv"``: :func:`conv`) ending in ``hidden`` features."""
    heads = {t: nn.Linear(hidden, classes) for t in tasks}
    if trunk not in TRUNKS:
        raise ValueError(f"trunk must be one of {TRUNKS}, got {trunk!r}")
    one = lambda: nn.Sequential(*trunk_blocks(trunk, inputs, hidden, filters))  # noqa: E731
    if method == "soft":
        return SoftSharing({t: nn.Sequential(one(), nn.Linear(hidden, classes)) for t in tasks})
    if method == "cross_stitch":
        columns = [trunk_blocks(trunk, inputs, hidden, filters) for _ in tasks]
        return CrossStitch(columns, heads, init=(0.9, 0.1), tasks=list(tasks))
    if method == "mmoe":  # four experts with half-width first layers: about twice the trunk's parameters
        if trunk == "conv":
            experts = [conv(filters // 2, hidden, math.isqrt(inputs)) for _ in range(4)]
        else:
            experts = [mlp((inputs, hidden // 2, hidden)) for _ in range(4)]
        return MMoE(experts, inputs, heads)
    return HardSharing(one(), heads)


def parameter_count(method: str, trunk: str = "mlp", hidden: int = 256, filters: int = 32, inputs: int = 144,
                    classes: int = 10) -> int:
    """Parameters ``method`` trains on two tasks: both single-task networks for ``single``, the hard-sharing
    network for a loss weighting or an aggregator (they add at most a handful of task weights)."""
    if method == "single":
        one = build("single", inputs, hidden, classes, tasks=TASKS[:1], trunk=trunk, filters=filters)
        return len(TASKS) * sum(p.numel() for p in one.parameters())
    arch = method if method in ARCHITECTURES else "hard"
    return sum(p.numel() for p in build(arch, inputs, hidden, classes, trunk=trunk, filters=filters).parameters())


def key(*parts: str) -> str:
    """A metric of :func:`run_multidigits` or :func:`run_toy`: ``key(method, task, name)``
    (``"hard/left/acc"``; ``name``: ``acc``, ``ci95``, ``gain``, ``gain_ci95``, ``seed{s}``),
    ``key(method, "seconds_per_epoch")`` or ``key("toy", method, name)`` (``worst``, ``ci95``, ``task{i}``);
    for the writer and every reader alike. A full run stores the MultiDigits ones under ``mlp/`` or ``conv/``
    (:meth:`mapping.results.Record.metrics` takes that prefix off)."""
    return metric_key(*parts)


def paired(metrics: dict[str, float] | None, method: str, digits: int = 2) -> list[str]:
    """``method`` minus the single-task networks, paired by seed, as ``"gain ± ci95"`` per task (in
    :data:`TASKS` order); an em dash per task where ``metrics`` has no such difference."""
    if not metrics or key(method, TASKS[0], "gain") not in metrics:
        return ["—"] * len(TASKS)
    return [f"{metrics[key(method, t, 'gain')]:+.{digits}f} ± {metrics[key(method, t, 'gain_ci95')]:.{digits}f}"
            for t in TASKS]


def worst(metrics: dict[str, float] | None, method: str, digits: int = 3) -> str:
    """``key("toy", method, "worst")`` ± its 95% CI: the worst task's loss ratio at the end of the toy run; an
    em dash where there is no run, a ``KeyError`` where the run lacks the method."""
    from ..report import fmt
    if not metrics:
        return "—"
    return fmt(metrics[key("toy", method, "worst")], metrics[key("toy", method, "ci95")], digits)


def accuracy_table(metrics: dict[str, float], methods: tuple[str, ...] | list[str], run: str) -> str:
    """A markdown table headed ``run``: per method of ``methods``, the accuracy (%) ± 95% CI on each task and
    its difference from the single-task networks (:func:`paired`); a ``KeyError`` where an accuracy is missing."""
    from ..report import markdown_table, metric
    rows = [[SHORT[m]] + [metric(metrics, key(m, t, "acc")) for t in TASKS] + paired(metrics, m) for m in methods]
    return markdown_table([run] + list(TASKS) + [f"{t} − single" for t in TASKS], rows)


def contains_zero(metrics: dict[str, float], method: str) -> bool:
    """Whether the 95% interval of ``method`` minus the single-task networks, paired by seed, contains zero on
    every task: the two cannot be told apart on those seeds."""
    return all(abs(metrics[key(method, t, "gain")]) <= metrics[key(method, t, "gain_ci95")] for t in TASKS)


def rule(method: str, tasks: int):
    """The weighting or aggregator of ``method`` (equal weights for the architectures)."""
    return {"rlw": lambda: wt.RandomWeighting(tasks, total=tasks), "uncertainty": lambda: wt.UncertaintyWeighting(tasks),
            "gradnorm": lambda: wt.GradNorm(tasks), "dwa": lambda: wt.DynamicWeightAverage(tasks),
            "famo": lambda: wt.FAMO(tasks), "pcgrad": lambda: agg.PCGrad(seed=0), "mgda_ub": lambda: agg.MGDA(),
            "cagrad": lambda: agg.CAGrad(), "upgrad": lambda: agg.UPGrad(),
            }.get(method, lambda: wt.EqualWeighting(tasks))()


def last_shared_layer(model: HardSharing) -> list[Tensor]:
    """GradNorm's W: the parameters of the trunk's last layer that has any (Chen et al. 2018, §3.2)."""
    layers = [m for m in model.trunk.modules() if not list(m.children()) and list(m.parameters())]
    return list(layers[-1].parameters())


def step(method: str, model: nn.Module, how, x: Tensor, targets: dict[str, Tensor], loss_fn, opt,
         soft_penalty: float) -> tuple[Tensor, Tensor]:
    """One training step of any method; returns the task losses before the step and the task weights used,
    both ``(T,)``."""
    opt.zero_grad()
    if method == "mgda_ub":  # aggregator on the shared representation z
        z = model.trunk(x)  # (N, hidden)
        losses = task_losses({t: h(z) for t, h in model.heads.items()}, targets, loss_fn)  # (T,)
        weights = mtl_backward(losses, model.shared_parameters(), how, features=z)  # (T,)
    elif isinstance(how, agg.Aggregator):
        losses = task_losses(model(x), targets, loss_fn)  # (T,)
        weights = mtl_backward(losses, model.shared_parameters(), how)  # (T,)
    else:
        losses = task_losses(model(x), targets, loss_fn)  # (T,)
        total = how(losses, last_shared_layer(model)) if method == "gradnorm" else how(losses)
        if method == "soft":
            total = total + soft_penalty * model.penalty()
        total.backward()
        weights = how.weights  # (T,)
    opt.step()
    if method == "famo":
        with torch.no_grad():
            how.update(task_losses(model(x), targets, loss_fn))
    return losses.detach(), weights.detach()


def train(method: str, config: MultitaskConfig, data: MultiDigits, seed: int, tasks=TASKS) -> tuple[nn.Module, dict]:
    """Train ``method`` on ``data`` (one network, or one per task for ``single``); history per epoch."""
    torch.manual_seed(seed)
    inputs, classes = data.x[0].numel(), 10
    groups = [[t] for t in tasks] if method == "single" else [list(tasks)]
    models, history = {}, {"epoch_seconds": [], "weights": []}
    for group in groups:
        model = build(method, inputs, config.hidden, classes, group, config.trunk, config.filters)
        how = rule(method, len(group))
        extra = list(how.parameters()) if isinstance(how, nn.Module) else []
        opt = torch.optim.Adam([{"params": list(model.parameters())},  # GradNorm's weights: their own rate
                                {"params": extra, "lr": GRADNORM_LR if method == "gradnorm" else config.lr}],
                               lr=config.lr)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(config.epochs):
            tic = time.perf_counter()
            for idx in torch.randperm(len(data.x), generator=gen).split(config.batch):
                targets = {t: data.targets[t][idx] for t in group}
                _, weights = step(method, model, how, data.x[idx], targets, F.cross_entropy, opt,
                                  config.soft_penalty)
            if method == "dwa":
                how.end_epoch()
            history["epoch_seconds"].append(time.perf_counter() - tic)
            history["weights"].append(weights.tolist())  # of the epoch's last step
        models[group[0] if method == "single" else "all"] = model
    return models, history


@torch.no_grad()
def accuracy(models: dict[str, nn.Module], data: MultiDigits, tasks=TASKS) -> dict[str, float]:
    """Test accuracy (%) of each task."""
    out = {}
    for t in tasks:
        model = models.get(t, models.get("all"))
        out[t] = 100 * accuracy_of(model.eval()(data.x)[t], data.targets[t])
    return out


def run_multidigits(config: MultitaskConfig, progress: bool = False) -> dict[str, float]:
    """``{method}/{task}/acc`` and ``/ci95`` over seeds, per seed ``{method}/{task}/seed{s}``, the seconds per
    epoch, each method's difference to the single-task models paired by seed (``{method}/{task}/gain`` and
    ``/gain_ci95``), and that of the best one-trunk method (:data:`ONE_TRUNK`) as ``best/...``."""
    train_set = MultiDigits("train", pairs=config.train_pairs, seed=0)
    test_set = MultiDigits("test", pairs=config.test_pairs, seed=0)
    metrics: dict[str, float] = {}
    per_seed: dict[str, Tensor] = {}
    for method in config.methods:
        accs = []
        for seed in config.seeds:
            models, history = train(method, config, train_set, seed)
            acc = accuracy(models, test_set)
            accs.append([acc[t] for t in TASKS])
            for t in TASKS:
                metrics[key(method, t, f"seed{seed}")] = acc[t]
            # every network of the method (two for single-task models) over one epoch
            metrics[key(method, "seconds_per_epoch")] = sum(history["epoch_seconds"]) / config.epochs
            if progress:
                print(method, seed, {t: round(acc[t], 2) for t in TASKS}, flush=True)
        per_seed[method] = torch.tensor(accs, dtype=torch.float64)  # (seeds, tasks)
        for i, t in enumerate(TASKS):
            metrics[key(method, t, "acc")], metrics[key(method, t, "ci95")] = t_ci95(per_seed[method][:, i])
    if "single" in per_seed:
        for method in per_seed:  # every method against the single-task models, paired by seed
            if method != "single":
                for i, t in enumerate(TASKS):
                    gap = per_seed[method][:, i] - per_seed["single"][:, i]  # (seeds,)
                    metrics[key(method, t, "gain")], metrics[key(method, t, "gain_ci95")] = t_ci95(gap)
        shared = [m for m in per_seed if m in ONE_TRUNK]
        if shared:  # the best one-trunk method by its worse task (chosen on the test seeds: see the book)
            best = max(shared, key=lambda m: per_seed[m].mean(0).min().item())
            metrics["best/method_index"] = float(METHODS.index(best))
            for t in TASKS:
                metrics[key("best", t, "gain")] = metrics[key(best, t, "gain")]
                metrics[key("best", t, "gain_ci95")] = metrics[key(best, t, "gain_ci95")]
    return metrics


@dataclass(frozen=True)
class ToyConfig:
    """GradNorm's toy (Chen et al. 2018, §4): a 4-layer ReLU trunk of 100 units, one linear head per task."""
    steps: int = 3000
    batch: int = 100
    lr: float = 1e-3
    sigmas: tuple[float, ...] = (1.0, 100.0)  # the paper's T = 2 scales
    methods: tuple[str, ...] = ("equal", "uncertainty", "gradnorm")
    seeds: tuple[int, ...] = (0, 1, 2)
    log_every: int = 50

    @classmethod
    def for_mode(cls, mode: str | None = None) -> "ToyConfig":
        return budget.pick(smoke=cls(steps=100, seeds=(0, 1), log_every=20), quick=cls(steps=1500, seeds=(0, 1)),
                           full=cls(), mode_=mode)


@torch.no_grad()
def toy_losses(model: nn.Module, split) -> Tensor:
    """Test MSE of each task, ``(T,)``."""
    return task_losses(model(split.x), split.targets, F.mse_loss)


def train_toy(method: str, config: ToyConfig, seed: int) -> dict[str, list]:
    """Train on GradNorm's toy; the history of test losses normalised by their start (``L_i(t) / L_i(0)``),
    and of the task weights, every ``log_every`` steps."""
    toy = gradnorm_toy(config.sigmas, seed=seed)
    tasks = list(toy.train.targets)
    torch.manual_seed(seed)
    model = HardSharing(mlp((toy.train.x.shape[1], 100, 100, 100, 100)),
                        {t: nn.Linear(100, toy.train.targets[t].shape[1]) for t in tasks})
    how = rule(method, len(tasks))
    extra = list(how.parameters()) if isinstance(how, nn.Module) else []
    opt = torch.optim.Adam([{"params": list(model.parameters())},
                            {"params": extra, "lr": GRADNORM_LR if method == "gradnorm" else config.lr}], lr=config.lr)
    gen = torch.Generator().manual_seed(seed)
    start = toy_losses(model, toy.test)  # (T,)
    history: dict[str, list] = {"step": [], "ratio": [], "weights": []}
    for s in range(1, config.steps + 1):
        idx = torch.randint(len(toy.train.x), (config.batch,), generator=gen)
        targets = {t: toy.train.targets[t][idx] for t in tasks}
        _, weights = step(method, model, how, toy.train.x[idx], targets, F.mse_loss, opt, 0.0)
        if s % config.log_every == 0 or s == config.steps:
            history["step"].append(s)
            history["ratio"].append((toy_losses(model, toy.test) / start).tolist())
            history["weights"].append(weights.tolist())
    return history


def run_toy(config: ToyConfig) -> tuple[dict[str, float], dict[str, list]]:
    """``toy/{method}/worst`` and ``toy/{method}/ci95`` (mean and 95% interval over seeds of the largest final
    ``L_i(t) / L_i(0)``) and per task
    ``toy/{method}/task{i}``; with the first seed's histories for the figures."""
    metrics, curves = {}, {}
    for method in config.methods:
        finals = []
        for seed in config.seeds:
            history = train_toy(method, config, seed)
            finals.append(history["ratio"][-1])
            if seed == config.seeds[0]:
                curves[method] = history
        finals = torch.tensor(finals, dtype=torch.float64)  # (seeds, T)
        metrics[key("toy", method, "worst")], metrics[key("toy", method, "ci95")] = t_ci95(finals.max(1).values)
        for i in range(finals.shape[1]):
            metrics[key("toy", method, f"task{i}")] = finals[:, i].mean().item()
    return metrics, curves


__all__ = ["AGGREGATORS", "ARCHITECTURES", "GRADNORM_LR", "LABELS", "METHODS", "MultitaskConfig", "ONE_TRUNK",
           "SHORT", "TASKS", "TRUNKS", "ToyConfig", "WEIGHTINGS", "accuracy", "accuracy_table", "build",
           "contains_zero", "conv", "conv_blocks", "key", "last_shared_layer", "paired", "parameter_count", "rule",
           "run_multidigits", "run_toy", "step", "toy_losses", "train", "train_toy", "trunk_blocks", "worst"]
