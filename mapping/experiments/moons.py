"""DANN on the inter-twinning moons (Ganin et al. 2016, JMLR, §5.1.1): source-only, DANN and target-supervised.

The paper's toy network: one hidden layer of 15 sigmoid units (the feature extractor ``G_f``) and a softmax label
classifier ``G_y``; the domain classifier reads the hidden layer. All three methods train the same network from
the same initialisation with full-batch SGD (momentum 0.9) for ``steps`` steps, learning rate annealed by the
paper's ``mu_p = lr / (1 + 10 p)^0.75`` (:func:`~mapping.transfer.dann_lr`) with ``p = step / steps``:

* ``source_only``: cross-entropy on the labelled source;
* ``dann``: plus ``trade_off * L_d`` through the gradient reversal layer, ``lambda_p = 2 / (1 + exp(-10 p)) - 1``
  (:func:`~mapping.transfer.dann_lambda`), with a one-hidden-layer ReLU discriminator of ``disc_hidden`` units;
* ``target_supervised``: cross-entropy on the *labelled* target, the upper bound.

Accuracies are measured on the target sample (transductive: the unlabelled points DANN trained on) and on a
held-out draw of the target distribution (``n_test`` points).

Choices that differ from the released shallow code (``DANN.py``: per-example SGD at rate 0.05 for 500 epochs,
constant ``lambda = 6`` on both players, logistic-regression domain classifier): full-batch steps (two
orders of magnitude fewer updates), the paper's schedules of §5.2.2, and a hidden layer in the discriminator,
which we measured to make the outcome less seed-dependent.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import budget
from ..results import metric_key
from ..stats import accuracy
from ..data.moons import DomainShift, inter_twinning_moons
from ..transfer import DomainAdversarialLoss, DomainDiscriminator, dann_lr

METHODS = ("source_only", "dann", "target_supervised")


class MoonsNet(nn.Module):
    """The paper's toy network: ``features`` = Linear(2, hidden) + sigmoid, ``classifier`` = Linear(hidden, 2)."""

    def __init__(self, hidden: int = 15) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(2, hidden), nn.Sigmoid())
        self.classifier = nn.Linear(hidden, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (N, 2) logits


@dataclass
class MoonsRun:
    """One seed: ``accuracy[method]`` on the target sample, ``test_accuracy[method]`` on held-out target points,
    ``source_accuracy[method]`` on the source, the trained ``models`` and the ``data``."""

    angle: float
    seed: int
    accuracy: dict[str, float] = field(default_factory=dict)
    test_accuracy: dict[str, float] = field(default_factory=dict)
    source_accuracy: dict[str, float] = field(default_factory=dict)
    domain_accuracy: float | None = None
    models: dict[str, MoonsNet] = field(default_factory=dict)
    data: DomainShift | None = None


def train_moons(method: str, data: DomainShift, *, seed: int = 0, steps: int = 2000, lr: float = 0.3,
                momentum: float = 0.9, hidden: int = 15, disc_hidden: int = 50,
                trade_off: float = 0.5) -> tuple[MoonsNet, float | None]:
    """Train one ``method`` from the initialisation of ``seed``; returns the model and, for DANN, the last
    domain accuracy of the discriminator."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    torch.manual_seed(seed)
    model = MoonsNet(hidden)
    adversary = DomainAdversarialLoss(DomainDiscriminator(hidden, (disc_hidden,) if disc_hidden else ()))
    opt = torch.optim.SGD([*model.parameters(), *adversary.parameters()], lr=lr, momentum=momentum)
    x, y = (data.target_x, data.target_y) if method == "target_supervised" else (data.source_x, data.source_y)
    for step in range(steps):
        p = step / steps
        for group in opt.param_groups:
            group["lr"] = dann_lr(p, lr)
        f = model.features(x)  # (N, hidden)
        loss = F.cross_entropy(model.classifier(f), y)  # ()
        if method == "dann":
            loss = loss + trade_off * adversary(f, model.features(data.target_x), progress=p)  # ()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, adversary.domain_accuracy


def run_moons(angle: float = 35.0, seed: int = 0, steps: int = 2000, *, methods: tuple[str, ...] = METHODS,
              n_per_domain: int = 150, noise: float = 0.05, n_test: int = 1000, **train_kw) -> MoonsRun:
    """Train each of ``methods`` on the moons of ``seed`` rotated by ``angle``; see the module docstring.

    ``train_kw`` goes to :func:`train_moons` (``lr``, ``momentum``, ``hidden``, ``disc_hidden``, ``trade_off``).
    """
    data = inter_twinning_moons(n_per_domain, noise, angle, seed, n_test=n_test)
    run = MoonsRun(angle, seed, data=data)
    for method in methods:
        model, domain = train_moons(method, data, seed=seed, steps=steps, **train_kw)
        run.models[method] = model
        with torch.no_grad():
            run.accuracy[method] = accuracy(model(data.target_x), data.target_y)
            run.test_accuracy[method] = accuracy(model(data.test_x), data.test_y)
            run.source_accuracy[method] = accuracy(model(data.source_x), data.source_y)
        if method == "dann":
            run.domain_accuracy = domain
    return run


def decision_grid(model: nn.Module, points: Tensor, resolution: int = 200,
                  margin: float = 0.5) -> tuple[Tensor, Tensor, Tensor]:
    """``(xs, ys, prob)`` for ``contourf``: a ``resolution`` x ``resolution`` grid over the box of ``points (N, 2)``
    widened by ``margin``, and the model's probability of class 1 there, ``prob (resolution, resolution)``
    (row ``i`` at ``ys[i]``, column ``j`` at ``xs[j]``)."""
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ValueError(f"points must be a non-empty (N, 2) tensor, got "
                         f"{tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__}")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an int >= 2, got {resolution!r}")
    low, high = points.min(0).values - margin, points.max(0).values + margin  # (2,), (2,)
    xs = torch.linspace(float(low[0]), float(high[0]), resolution)  # (R,)
    ys = torch.linspace(float(low[1]), float(high[1]), resolution)  # (R,)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (R, R) each
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1).to(points.dtype)  # (R * R, 2)
    with torch.no_grad():
        prob = model(grid).softmax(1)[:, 1].reshape(resolution, resolution)  # (R, R)
    return xs, ys, prob


LABELS = {"source_only": "source only", "dann": "DANN", "target_supervised": "target supervised"}


def sweep_figure(runs):
    """:func:`run_sweep` drawn for the book's column: target accuracy against the angle, one colour per method,
    and the share of the gap DANN closes; ``runs``: ``[(name, metrics, angles, live)]``. A stored run is drawn as
    lines (broken where a value is missing), a live one as open markers only, never joined: a sparse sweep must
    not draw a line across a collapse it did not sample. The legend sits under the panels."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .. import plot
    fig, (acc_ax, gap_ax) = plot.figure(1, 2, height=3.3)
    colours = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(METHODS)}
    styles = {False: dict(ls="-", marker="o", ms=3), True: dict(ls="none", marker="D", ms=6, mfc="none", mew=1.3)}
    nan = float("nan")
    for name, metrics, angles, live in runs:
        for method in METHODS:
            acc = [metrics.get(key(a, method, "acc"), nan) for a in angles]
            acc_ax.plot(angles, acc, color=colours[method], **styles[live])
        gap = [100 * metrics.get(key(a, "dann", "gap_closed"), nan) for a in angles]
        gap_ax.plot(angles, gap, color=colours["dann"], **styles[live])
    acc_ax.set(xlabel="rotation (degrees)", ylabel="target accuracy (%)", ylim=(0, 105))
    gap_ax.set(xlabel="rotation (degrees)", ylabel="gap DANN closes (%)", ylim=(-5, 105))
    gap_ax.axhline(50, color="k", lw=0.5)
    handles = [Line2D([], [], color=colours[m], lw=2, label=LABELS[m]) for m in METHODS]
    handles += [Line2D([], [], color="grey", label=name, **styles[live]) for name, _, _, live in runs]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    return fig


def key(angle: float, method: str, name: str) -> str:
    """The metric ``moons/{angle:g}/{method}/{name}`` of :func:`run_sweep` (``name``: ``acc``, ``ci95``,
    ``seed{s}``, ``gap_closed``), for the writer and every reader alike."""
    return metric_key("moons", float(angle), method, name)


def gap_closed(metrics: dict[str, float], angle: float) -> float | None:
    """The share of the gap DANN closes at ``angle``; ``None`` where the sweep could not measure it (no
    source-only or target-supervised run there, or no gap): the one moons metric that is absent by design."""
    return metrics.get(key(angle, "dann", "gap_closed"))


def angles_table(runs: list[tuple[str, dict[str, float] | None]], angles: tuple[float, ...]) -> str:
    """A markdown table, one row per angle and run (``runs``: ``[(name, metrics)]``, a run without metrics left
    out): source-only and DANN accuracy (%) ± 95% CI, and the share of the gap DANN closes."""
    from ..report import markdown_table, metric
    rows = []
    for a in angles:
        for name, m in runs:
            if m:
                gap = gap_closed(m, a)
                rows.append([f"{a:g}", name] + [metric(m, key(a, meth, "acc"), 1) for meth in ("source_only", "dann")]
                            + ["—" if gap is None else f"{100 * gap:.0f}%"])
    return markdown_table(["angle", "run", "source only", "DANN", "gap closed"], rows)


@dataclass(frozen=True)
class MoonsConfig:
    """The sweep of :func:`run_sweep`: every angle (degrees) and seed, each method, ``steps`` full-batch steps."""

    angles: tuple[float, ...] = (10.0, 20.0, 30.0, 35.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 2000
    methods: tuple[str, ...] = METHODS

    @classmethod
    def for_mode(cls, mode: str | None = None) -> "MoonsConfig":
        return budget.pick(smoke=cls(angles=(35.0,), seeds=(0, 1), steps=100),
                           # quick: 1000 steps, within 3 points of the full run at 35, 60 and 90 degrees
                           quick=cls(angles=(35.0, 60.0, 90.0), seeds=(0, 1), steps=1000), full=cls(), mode_=mode)


def run_sweep(config: MoonsConfig) -> dict[str, float]:
    """``moons/{angle}/{method}/acc`` and ``/ci95`` (target-sample accuracy, %, Student's t over seeds), per seed
    ``/seed{s}``, and ``moons/{angle}/dann/gap_closed``: the share of the gap between source-only and
    target-supervised that DANN closes, from the means (where both are in the sweep)."""
    from ..stats import t_ci95
    metrics: dict[str, float] = {}
    for angle in config.angles:
        per_seed: dict[str, list[float]] = {m: [] for m in config.methods}
        for seed in config.seeds:
            run = run_moons(angle, seed, config.steps, methods=config.methods, n_test=0)
            for method in config.methods:
                per_seed[method].append(100 * run.accuracy[method])
                metrics[key(angle, method, f"seed{seed}")] = per_seed[method][-1]
        for method, accs in per_seed.items():
            mean, half = t_ci95(torch.tensor(accs))
            metrics[key(angle, method, "acc")], metrics[key(angle, method, "ci95")] = mean, half
        low = metrics.get(key(angle, "source_only", "acc"))
        high = metrics.get(key(angle, "target_supervised", "acc"))
        if "dann" in per_seed and low is not None and high is not None and high > low:
            metrics[key(angle, "dann", "gap_closed")] = (metrics[key(angle, "dann", "acc")] - low) / (high - low)
    return metrics


__all__ = ["LABELS", "METHODS", "MoonsConfig", "MoonsNet", "MoonsRun", "angles_table", "decision_grid",
           "gap_closed", "key", "run_moons", "run_sweep", "sweep_figure", "train_moons"]
