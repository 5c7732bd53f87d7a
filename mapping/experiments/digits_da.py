"""Domain adaptation on digits: scikit-learn's digits (source) to an MNIST-M-like colour shift of them (target).

The digits analogue of Ganin et al. 2016's MNIST -> MNIST-M experiment (JMLR, §5.2.2). Data:
:func:`mapping.data.shifted_digits` (``kind="texture"``: each digit blended with a random colour texture at most
mid-grey, ``|T - digit|``, which keeps the digit lighter than its background; see :mod:`mapping.data.moons`). To
keep the two domains from sharing images, the training split's images are halved: the source is the plain (3-channel)
version of the even rows, with labels; the target the shifted version of the odd rows, without labels. Accuracy is
measured on the shifted *test* images (disjoint from both).

Methods (weights chosen on validation, below), all the same network (:class:`DigitsNet`: two 3x3 convolutions, a
max-pool, a 128-unit feature layer, a linear classifier; like DANN's MNIST network no normalisation of the input)
from the same initialisation, Adam, ``steps`` steps of a source batch and a target batch:

* ``source_only``: cross-entropy on the source (the lower bound);
* ``dann``: plus the domain-adversarial loss on the features, through a gradient reversal layer whose weight follows
  the paper's schedule ``lambda_p = 2 / (1 + exp(-10 p)) - 1`` (:class:`mapping.transfer.DomainAdversarialLoss`,
  Ganin et al. 2016, eq. (13)-(15) and §5.2.2), times ``dann_weight``;
* ``mmd``: plus ``mmd_weight`` times the multi-kernel MMD^2 of source and target features (DAN, Long et al. 2015,
  eq. (3) biased);
* ``coral``: plus ``coral_weight`` times the CORAL loss ``||C_s - C_t||_F^2 / (4 d^2)`` (Sun & Saenko 2016, eq. (1));
* ``target_supervised``: cross-entropy on the *labelled* target half (the upper bound).

**Validation.** The settings were chosen on a validation split of the *training* images only
(``domains(validation=True)``: every fourth training row held out and shifted, the other rows halved into source and
target), never on the test images, by target validation accuracy (the optimistic "oracle" protocol of much of the DA
literature; Ganin et al. avoid target labels with reverse validation). Adam at 1e-3, 1500 steps, seeds 0, 1, 2 (%):
source only 69.9, 76.2; target supervised 93.2, 93.2; DANN weight 0.1: 83.9, 86.3, 83.9; 0.3: 80.7, 83.9, 84.8;
1: 84.5, 67.0; 3: 76.2, 77.7; the paper's learning-rate annealing ``lr / (1 + 10 p)^0.75`` hurt DANN (weight 0.3:
75.9, 77.7, 57.1; 1: 58.6, 49.7, 44.9). MMD weight 0.3: 89.9, 89.3; 1: 90.2, 89.9; 3: 10.1, 10.1 (collapse). CORAL
weight 1: 82.1, 83.9; 10: 86.3, 86.0; 100: 90.8, 87.8. Chosen: DANN 0.1 (the grid's smallest), MMD 1, CORAL 100.
Per-image standardisation of the input was rejected without a search: it removes brightness and contrast, part of
this shift, by hand (source only rose from 74% to 86% in a first diagnostic on the shifted test images, 800 steps,
used for no choice), and DANN's network does not use it.

Also: the share of the source-only-to-target-supervised gap each adaptation method closes, and how separable the two
domains are in feature space before (source only) and after adaptation (:func:`domain_separability`: test accuracy
of a logistic regression telling source from target features, 50% = indistinguishable), and 2-D PCA views of the
features (:func:`feature_pca`) for the book's before/after plot.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_ints
from .. import budget
from ..data.moons import SHIFT_KINDS, shifted_digits
from ..results import metric_key
from ..stats import accuracy
from ..transfer import CORALLoss, DomainAdversarialLoss, DomainDiscriminator, MMDLoss

METHODS = ("source_only", "dann", "mmd", "coral", "target_supervised")
ADAPTERS = ("dann", "mmd", "coral")
LABELS = {"source_only": "source only", "dann": "DANN", "mmd": "MMD (DAN)", "coral": "CORAL",
          "target_supervised": "target supervised (upper bound)"}


@dataclass(frozen=True)
class DigitsDAConfig:
    """One experiment: shift ``kind``, ``steps`` Adam steps at ``lr`` on batches of ``batch`` per domain, the
    adaptation losses' weights, the discriminator's hidden width, the ``seeds`` and ``methods``."""

    kind: str = "texture"
    steps: int = 1500
    batch: int = 64
    lr: float = 1e-3
    dann_weight: float = 0.1
    mmd_weight: float = 1.0
    coral_weight: float = 100.0
    disc_hidden: int = 256
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = METHODS

    def __post_init__(self) -> None:
        if self.kind not in SHIFT_KINDS:
            raise ValueError(f"kind must be one of {SHIFT_KINDS}, got {self.kind!r}")
        check_ints(self, positive=("steps", "batch", "disc_hidden"))
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty tuple of {METHODS}, got {self.methods!r}")
        if not self.seeds:
            raise ValueError("seeds must be a non-empty tuple of ints")

    @classmethod
    def for_mode(cls, mode: str | None = None) -> "DigitsDAConfig":
        # quick: 250 steps, 30 s; two seeds of an adversarial game are noisy (DANN closed 36% of the gap at 250
        # steps and -1% at 350, MMD 79% and 85%): the page's cells assert what its text says of the live run
        return budget.pick(smoke=cls(steps=30, seeds=(0, 1)), quick=cls(steps=250, seeds=(0, 1)), full=cls(), mode_=mode)

    def weight(self, method: str) -> float:
        return {"dann": self.dann_weight, "mmd": self.mmd_weight, "coral": self.coral_weight}.get(method, 0.0)


class DigitsNet(nn.Module):
    """``features``: (N, 3, 8, 8) -> (N, 128); ``classifier``: (N, 128) -> (N, 10)."""

    def __init__(self, width: int = 32, features: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Flatten(), nn.Linear(2 * width * 16, features), nn.ReLU())
        self.classifier = nn.Linear(features, 10)
        self.dim = features

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (N, 10)


@dataclass
class Domains:
    """Source half (labelled), target half (labels for the upper bound and evaluation only), and the test images:
    shifted (``test_x``, ``test_y``) and plain (``test_source_x``, for the domain-separability measure); ``*_index``:
    the rows of ``load_digits()`` each image comes from."""

    source_x: Tensor
    source_y: Tensor
    target_x: Tensor
    target_y: Tensor
    test_x: Tensor
    test_y: Tensor
    test_source_x: Tensor
    source_index: Tensor
    target_index: Tensor
    test_index: Tensor


def domains(kind: str = "texture", seed: int = 0, validation: bool = False) -> Domains:
    """Even rows of the training images: source (plain); odd rows: target (shifted); test: the test split.

    ``validation=True`` never touches the test split: every fourth training row (``i % 4 == 3``) is the test set,
    the other rows are halved alternately into source and target, for choosing settings.
    """
    if not isinstance(validation, bool):
        raise ValueError(f"validation must be True or False, got {validation!r}")
    train = shifted_digits("train", kind, seed)
    if validation:
        rows = torch.arange(len(train.source_y))  # (N,)
        held, fit = rows[rows % 4 == 3], rows[rows % 4 != 3]  # (N / 4,), (3N / 4,)
        test = (train.target_x[held], train.target_y[held], train.source_x[held], train.index[held])
    else:
        shifted = shifted_digits("test", kind, seed)
        fit = torch.arange(len(train.source_y))  # (N,)
        test = (shifted.target_x, shifted.target_y, shifted.source_x, shifted.index)
    src, tgt = fit[0::2], fit[1::2]  # (N_s,), (N_t,)
    test_x, test_y, test_source_x, test_index = test
    return Domains(train.source_x[src], train.source_y[src], train.target_x[tgt], train.target_y[tgt],
                   test_x, test_y, test_source_x, train.index[src], train.index[tgt], test_index)


def alignment(method: str, dim: int, config: DigitsDAConfig) -> nn.Module | None:
    """The adaptation loss of ``method`` on features of size ``dim`` (None for the supervised baselines)."""
    if method == "dann":
        return DomainAdversarialLoss(DomainDiscriminator(dim, (config.disc_hidden,)))
    return {"mmd": MMDLoss, "coral": CORALLoss}.get(method, lambda: None)()


def train(method: str, data: Domains, config: DigitsDAConfig, seed: int) -> DigitsNet:
    """Train ``method`` (see the module docstring) from the initialisation of ``seed``.

    Only ``target_supervised`` reads ``data.target_y``; the adaptation methods see the target images alone.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    torch.manual_seed(seed)
    model = DigitsNet()
    align = alignment(method, model.dim, config)
    params = [*model.parameters(), *(align.parameters() if align is not None else [])]
    opt = torch.optim.Adam(params, lr=config.lr)
    g = torch.Generator().manual_seed(seed)
    x, y = (data.target_x, data.target_y) if method == "target_supervised" else (data.source_x, data.source_y)
    for step in range(config.steps):
        i = torch.randint(len(x), (config.batch,), generator=g)  # (B,)
        f_s = model.features(x[i])  # (B, 128)
        loss = F.cross_entropy(model.classifier(f_s), y[i])  # ()
        if align is not None:
            j = torch.randint(len(data.target_x), (config.batch,), generator=g)  # (B,)
            f_t = model.features(data.target_x[j])  # (B, 128)
            extra = align(f_s, f_t, progress=step / config.steps) if method == "dann" else align(f_s, f_t)  # ()
            loss = loss + config.weight(method) * extra
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
@torch.no_grad()
def domain_separability(model: DigitsNet, data: Domains) -> float:
    """Test accuracy (%) of a logistic regression telling source from target features of ``model``.

    Fitted (standardised features, L2, C = 1) on the training halves' features (plain source vs shifted target
    images), scored on the test images' plain vs shifted features, both classes equally many: 50 = the domains are
    indistinguishable to a linear probe, 100 = separable (Ben-David et al. 2010's proxy A-distance is
    ``2 (2 acc - 1)``)."""
    from sklearn.linear_model import LogisticRegression  # imported here: importing sklearn costs ~1 s
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    fit_x = torch.cat([model.features(data.source_x), model.features(data.target_x)]).double().numpy()  # (N, 128)
    fit_d = [1] * len(data.source_x) + [0] * len(data.target_x)
    test_x = torch.cat([model.features(data.test_source_x), model.features(data.test_x)]).double().numpy()  # (2M, 128)
    test_d = [1] * len(data.test_x) + [0] * len(data.test_x)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(fit_x, fit_d)
    return 100 * float(probe.score(test_x, test_d))


@torch.no_grad()
def feature_pca(model: DigitsNet, source_x: Tensor, target_x: Tensor) -> tuple[Tensor, Tensor]:
    """2-D PCA coordinates of ``model``'s features of ``source_x (N_s, 3, 8, 8)`` and ``target_x (N_t, 3, 8, 8)``:
    ``(N_s, 2)``, ``(N_t, 2)``, the top two principal axes of the pooled, centred features, each axis signed so that
    the source mean lies on its positive side."""
    for name, x in (("source_x", source_x), ("target_x", target_x)):
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1:] != (3, 8, 8) or len(x) < 1:
            raise ValueError(f"{name} must be a non-empty (N, 3, 8, 8) image tensor, got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    f = torch.cat([model.features(source_x), model.features(target_x)]).double()  # (N_s + N_t, 128)
    f = f - f.mean(0)  # (N_s + N_t, 128)
    axes = torch.linalg.svd(f, full_matrices=False).Vh[:2]  # (2, 128)
    z = f @ axes.T  # (N_s + N_t, 2)
    z = z * torch.where(z[:len(source_x)].mean(0) < 0, -1.0, 1.0)  # (N_s + N_t, 2)
    return z[:len(source_x)].float(), z[len(source_x):].float()


def feature_views(models: dict[str, DigitsNet], data: Domains,
                  methods: tuple[str, ...] = ("source_only", "dann")) -> dict[str, tuple[Tensor, Tensor]]:
    """``{method: (source (M, 2), target (M, 2))}``: :func:`feature_pca` of the test images, plain and shifted
    (colour them by ``data.test_y``), before (source only) and after adaptation."""
    missing = [m for m in methods if m not in models]
    if missing:
        raise ValueError(f"methods {missing} have no trained model; models has {sorted(models)}")
    return {m: feature_pca(models[m], data.test_source_x, data.test_x) for m in methods}


def feature_figure(views: dict[str, tuple[Tensor, Tensor]], labels: Tensor, separability: dict[str, float],
                   title: str = ""):
    """:func:`feature_views` drawn for the book's column: one panel per method, the plain (source) test digits as
    faint dots and the shifted (target) ones as bold crosses, both coloured by ``labels (M,)``; each title gives
    ``separability[method]`` (%); one legend under the panels (markers, then digit colours)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .. import plot
    fig, axes = plot.figure(1, len(views), height=3.2, squeeze=False)
    cmap = plt.get_cmap("tab10")
    colours = cmap(labels.numpy() % 10)  # (M, 4)
    for ax, (method, (zs, zt)) in zip(axes[0], views.items()):
        ax.scatter(zs[:, 0], zs[:, 1], s=10, c=colours, marker="o", alpha=0.3, linewidths=0)
        ax.scatter(zt[:, 0], zt[:, 1], s=30, c=colours, marker="x", linewidths=1.3)
        ax.set(xticks=[], yticks=[], xlabel="PCA 1")
        ax.set_title(f"{LABELS[method]}\ndomains told apart {separability[method]:.0f}%", fontsize=9)
    axes[0, 0].set_ylabel("PCA 2")
    handles = [Line2D([], [], ls="", marker="o", ms=6, color="grey", alpha=0.4, label="plain (source)"),
               Line2D([], [], ls="", marker="x", ms=7, mew=1.6, color="grey", label="shifted (target)")]
    handles += [Line2D([], [], ls="", marker="s", ms=6, color=cmap(c), label=f"digit {c}") for c in range(10)]
    fig.legend(handles=handles, loc="outside lower center", ncol=6, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def key(method: str, *rest: object) -> str:
    """The metric keys :func:`run_digits` writes: ``key("dann", "acc")`` -> ``"digits/dann/acc"``,
    ``key("dann", "separability", "seed0")``, ``key("dann", "gap_closed")``."""
    return metric_key("digits", method, *rest)


def results_table(metrics: dict[str, float]) -> str:
    """A narrow markdown table of :func:`run_digits`'s metrics: per method the target accuracy (± 95% CI), the
    share of the gap closed and the domain separability (%)."""
    from ..report import fmt, markdown_table, metric

    def gap(method: str) -> str:
        closed = metrics.get(key(method, "gap_closed"))  # absent where the gap cannot be measured
        return "—" if closed is None else f"{100 * closed:.0f}%"
    return markdown_table(["method", "target accuracy", "gap closed", "told apart"],
                          [[LABELS[m], metric(metrics, key(m, "acc"), 1), gap(m),
                            fmt(metrics[key(m, "separability")], None, 1)]
                           for m in METHODS if key(m, "acc") in metrics])  # the methods the run trained


def run_digits(config: DigitsDAConfig, validation: bool = False) -> tuple[dict[str, float], dict[str, DigitsNet]]:
    """``digits/{method}/acc`` and ``/ci95`` (target test accuracy, %, Student's t over seeds), per seed
    ``/seed{s}``, the domain separability of the features ``/separability`` (mean over seeds, per seed
    ``/separability/seed{s}``), and for each adaptation method the share of the gap between source-only and
    target-supervised it closes, ``digits/{method}/gap_closed`` (from the means, per seed ``/gap_closed/seed{s}``);
    with the first seed's models, for :func:`feature_views`. ``validation``: see :func:`domains`."""
    from ..stats import t_ci95
    metrics: dict[str, float] = {}
    models: dict[str, DigitsNet] = {}
    for seed in config.seeds:
        data = domains(config.kind, seed, validation)
        for method in config.methods:
            model = train(method, data, config, seed)
            metrics[key(method, f"seed{seed}")] = 100 * accuracy(model(data.test_x), data.test_y)
            metrics[key(method, "separability", f"seed{seed}")] = domain_separability(model, data)
            if seed == config.seeds[0]:
                models[method] = model
    for method in config.methods:
        for part in (None, "separability"):
            values = torch.tensor([metrics[key(method, part, f"seed{s}")] for s in config.seeds], dtype=torch.float64)
            mean, half = t_ci95(values)
            metrics[key(method, part or "acc")] = mean
            if part is None:
                metrics[key(method, "ci95")] = half
    if "source_only" in config.methods and "target_supervised" in config.methods:
        for method in (m for m in ADAPTERS if m in config.methods):
            for tag, seeds in (((), config.seeds), *(((f"seed{s}",), (s,)) for s in config.seeds)):
                low, high, acc = (sum(metrics[key(m, f"seed{s}")] for s in seeds) / len(seeds)
                                  for m in ("source_only", "target_supervised", method))
                if high > low:
                    metrics[key(method, "gap_closed", *tag)] = (acc - low) / (high - low)
    return metrics, models


__all__ = ["ADAPTERS", "DigitsDAConfig", "DigitsNet", "Domains", "LABELS", "METHODS", "alignment", "key",
           "domain_separability", "domains", "feature_figure", "feature_pca", "feature_views", "results_table",
           "run_digits", "train"]
