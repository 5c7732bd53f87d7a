"""Metric-based meta-learning on Omniglot: Prototypical, Matching and Siamese networks on Conv-4.

Protocol (Vinyals et al. 2016; Snell et al. 2017): 28x28 images, 90-degree rotations as new training classes,
episodic training with Adam, learning rate halved at fixed intervals; test on 1000 episodes for each of
5-way 1-shot, 5-way 5-shot, 20-way 1-shot and 20-way 5-shot (mean accuracy and 95% CI), with batch norm in
evaluation mode (running statistics), so a prediction depends on the query image alone. Splits:

* ``vinyals``: the 1200 training characters (x4 rotations) and the other 423 for test;
* ``background``: Lake's 964 background characters (x4) for training, Lake's 20 one-shot runs for test;
* ``minimal``: Lake's 'minimal' background set ``small1`` (136 characters, x4), Lake's runs for test.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from .. import budget, memo
from ..data import EpisodeSampler, evaluate_lake, lake_split, small_split, vinyals_split
from ..device import autocast
from ..meta import REDUCTIONS, MatchingNetwork, PrototypicalNetwork, SiameseNetwork
from ..nn import Conv4
from ..nn.conv4 import BatchStatNorm2d
from ..results import metric_key, setting_name
from ..stats import mean_ci95
from ..train import train
from .pool import map_runs
from .runner import checkpoint_path, training_fields

METHODS = ("protonet", "matching", "siamese")
LABELS = {"protonet": "Prototypical Networks", "matching": "Matching Networks", "siamese": "Siamese Networks"}
SETTINGS = ((5, 1), (5, 5), (20, 1), (20, 5))
PAPER = {"protonet": (98.8, 99.7, 96.0, 98.9), "matching": (98.1, 98.9, 93.8, 98.5),
         "siamese": (97.3, 98.4, 88.2, 97.0)}  # REFERENCE.md; Siamese: Koch et al. as Finn et al. 2017 quote them
BACKGROUND_FULL = {"train_way": 60, "episodes": 2000, "halve_every": 700}  # ProtoNets on Lake's background set
# The fields of MetricConfig that decide the trained network (the test sizes do not): the key of trained().
TRAINING_FIELDS = ("method", "split", "train_way", "train_shot", "train_query", "episodes", "lr", "halve_every",
                   "hidden", "matching_scale", "seed", "amp")


@dataclass(frozen=True)
class MetricConfig:
    """One training run. ``episodes`` is the budget; ``halve_every`` the learning-rate schedule."""

    method: str = "protonet"
    split: str = "vinyals"
    train_way: int = 30
    train_shot: int = 1
    train_query: int = 5
    episodes: int = 3000
    lr: float = 1e-3
    halve_every: int = 1000
    test_episodes: int = 1000
    test_query: int = 5
    hidden: int = 64
    matching_scale: float = 20.0
    seed: int = 0
    amp: bool = False  # bfloat16 autocast in training, CUDA only (mapping.device.autocast)

    @classmethod
    def for_mode(cls, method: str, split: str = "vinyals", mode: str | None = None, **overrides) -> "MetricConfig":
        sizes = budget.pick(smoke=dict(episodes=30, test_episodes=20, train_way=10, hidden=32, halve_every=20),
                            quick=dict(episodes=150, test_episodes=100, train_way=10, halve_every=75),
                            full={}, mode_=mode)
        return cls(method=method, split=split, **{**sizes, **overrides})


def build(config: MetricConfig) -> nn.Module:
    """The method around a fresh Conv-4 (batch norm with running statistics, as in the ProtoNets code)."""
    if config.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {config.method!r}")
    backbone = Conv4(hidden=config.hidden, bn="running")
    if config.method == "protonet":
        return PrototypicalNetwork(backbone)
    if config.method == "matching":  # a fixed scale on the cosine: see the book's chapter 2.1
        return MatchingNetwork(backbone, scale=config.matching_scale)
    return SiameseNetwork(backbone)


def load_split(split: str, root=None, **load_kwargs) -> dict:
    """``{"train": OmniglotSplit, "test": OmniglotSplit}`` for ``vinyals``, ``background`` or ``minimal``;
    ``load_kwargs`` go to :func:`~mapping.data.load_omniglot` (e.g. ``download=True``)."""
    rotations = (0, 90, 180, 270)
    if split == "vinyals":
        return vinyals_split(root, rotations=rotations, **load_kwargs)
    if split == "background":
        return lake_split(root, rotations=rotations, **load_kwargs)
    if split == "minimal":
        return small_split(1, root, rotations=rotations, **load_kwargs)
    raise ValueError(f"split must be 'vinyals', 'background' or 'minimal', got {split!r}")


def fit(config: MetricConfig, data: dict, device: torch.device | str = "cpu", checkpoint=None,
        progress: bool | None = None) -> tuple[nn.Module, dict]:
    """Episodic training of ``config.method`` on ``data["train"]``; returns the model and its history."""
    torch.manual_seed(config.seed)
    model = build(config).to(device)
    sampler = data["train"].sampler(config.train_way, config.train_shot, config.train_query)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.halve_every, gamma=0.5)

    def step(_: int) -> dict[str, float]:
        model.train()
        batch = sampler.sample(1, generator).to(device)
        with autocast(device, config.amp):
            loss = model.meta_loss(batch)
            accuracy = model.diagnostics["accuracy"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        return {"loss": loss.item(), "accuracy": accuracy.item()}

    history = train(step, config.episodes, state={"model": model, "optimizer": optimizer, "schedule": schedule,
                                                   "episodes": generator},
                    checkpoint=checkpoint, checkpoint_every=500, desc=LABELS[config.method], progress=progress,
                    log_every=max(1, config.episodes // 200))
    return model, history


def trained(config: MetricConfig, device: torch.device | str = "cpu", data: dict | None = None,
            checkpoint=None, progress: bool | None = None, **load_kwargs) -> tuple[nn.Module, float]:
    """The model :func:`fit` trains for ``config``, and the seconds its training took, trained once per build.

    The trained weights are kept with :func:`mapping.memo.cached`, keyed by :data:`TRAINING_FIELDS` of
    ``config``, the device type and the package's code, so two pages that train the same network (chapter 2.1's
    background ProtoNet and chapter 5's recognizer) train it once. ``data`` is loaded with :func:`load_split`
    (``load_kwargs``) only when the network must be trained. ``MAPPING_MEMO=0`` trains every time.
    """
    device = torch.device(device)

    def compute() -> dict:
        split = data if data is not None else load_split(config.split, **load_kwargs)
        tic = time.perf_counter()
        model, _ = fit(config, split, device, checkpoint, progress)
        return {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "seconds": time.perf_counter() - tic}

    key = {**{field: getattr(config, field) for field in TRAINING_FIELDS}, "device": device.type}
    stored = memo.cached(f"omniglot-metric-{config.method}-{config.split}", key, compute)
    model = build(config)
    model.load_state_dict(stored["state"])
    return model.to(device), float(stored["seconds"])


def query_independent(model: nn.Module) -> bool:
    """Whether, in eval mode, an image's embedding depends on that image alone (no batch-statistic norm)."""
    return not any(isinstance(m, BatchStatNorm2d) for m in model.modules())


@torch.no_grad()
def embed_all(backbone: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
              chunk: int = 2000) -> torch.Tensor:
    """``images (classes, examples, H, W) -> (classes, examples, d)``, embedded ``chunk`` images at a time."""
    flat = images.flatten(0, 1)  # (classes*examples, H, W)
    z = torch.cat([backbone(flat[i:i + chunk, None].to(device)) for i in range(0, len(flat), chunk)])  # (N, d)
    return z.reshape(*images.shape[:2], -1)  # (classes, examples, d)


@torch.no_grad()
def accuracy(model: nn.Module, sampler: EpisodeSampler, episodes: int, generator: torch.Generator,
             device: torch.device | str = "cpu", chunk: int = 25, precompute: bool = True,
             embedded: torch.Tensor | None = None) -> torch.Tensor:
    """Query accuracy of each of ``episodes`` test episodes, ``(episodes,)``, with batch norm in eval mode.

    With ``precompute`` (and a backbone whose eval-mode output depends on each image alone) every test image
    is embedded once and episodes are drawn from the table of embeddings: the same episodes as drawing
    images (the sampler's random draws depend only on the table's shape), at a fraction of the cost.
    ``embedded`` is that table, ``embed_all(model.backbone, sampler.images)``, when the caller already has it
    (several settings of one model share it).
    """
    model.eval()
    table = precompute and query_independent(model) and hasattr(model, "backbone")
    if table:
        z = embedded if embedded is not None else embed_all(model.backbone, sampler.images, device)
        if z.shape[:2] != sampler.images.shape[:2]:
            raise ValueError(f"embedded must be (classes, examples, d) = {tuple(sampler.images.shape[:2])} + (d,), "
                             f"got {tuple(z.shape)}")
        sampler = EpisodeSampler(z, sampler.n_way, sampler.k_shot, sampler.q_query, channel=False)
        backbone, model.backbone = model.backbone, nn.Identity()
    try:
        out = []
        for start in range(0, episodes, chunk):
            batch = sampler.sample(min(chunk, episodes - start), generator).to(device)
            n_way = batch.info["classes"].shape[1]
            scores = model(batch.support_x, batch.support_y, batch.query_x, n_way)  # (tasks, q, n_way)
            out.append((scores.argmax(-1) == batch.query_y).double().mean(1).cpu())  # (tasks,)
    finally:
        if table:
            model.backbone = backbone
    return torch.cat(out)


def test_embeddings(model: nn.Module, images: torch.Tensor, device: torch.device | str = "cpu",
                    ) -> torch.Tensor | None:
    """``embed_all(model.backbone, images)`` in eval mode where :func:`accuracy` can use it, else None."""
    if not (query_independent(model) and hasattr(model, "backbone")):
        return None
    model.eval()
    return embed_all(model.backbone, images, device)


def shot_curve(model: nn.Module, split, shots=(1, 2, 3, 5, 10), n_way: int = 5, episodes: int = 100,
               q_query: int = 5, device: torch.device | str = "cpu") -> list[float]:
    """Mean accuracy (%) over ``episodes`` ``n_way``-way episodes of ``split`` for each number of ``shots``,
    the episodes of ``k`` shots drawn with seed ``k``; the split is embedded once for all of them."""
    z = test_embeddings(model, split.images, device)
    return [100 * accuracy(model, split.sampler(n_way, k, q_query), episodes, torch.Generator().manual_seed(k),
                           device, embedded=z).mean().item() for k in shots]


def run_name(method: str, split: str = "vinyals") -> str:
    """A run's metric prefix: ``protonet`` on the id-order split, else ``protonet/background``."""
    return method if split == "vinyals" else f"{method}/{split}"


def key(name: str, *rest: object) -> str:
    """The metric keys :func:`evaluate` and :func:`run_one` write, under a :func:`run_name`:
    ``key("protonet", "5w1s", "acc")``, ``key("siamese", "5w5s", "mean", "ci95")`` (a Siamese network's other
    k-shot rule), ``key("protonet/background", "train_seconds")``, ``key("protonet", "lake20", "error")``."""
    return metric_key(name, *rest)


def evaluate(model: nn.Module, config: MetricConfig, data: dict, device: torch.device | str = "cpu",
             ) -> dict[str, float]:
    """``"{method}/{n}w{k}s/acc"`` and ``/ci95`` in % over ``test_episodes`` episodes of the test split."""
    metrics = {}
    z = test_embeddings(model, data["test"].images, device)
    rules = [None]  # None: the model's own scoring; Siamese networks also report their other k-shot rule
    if getattr(model, "reduce", None) in REDUCTIONS:  # a Siamese network's k-shot rule (its public setting)
        rules.append("mean" if model.reduce == "max" else "max")
    for n, k in SETTINGS:
        for rule in rules if k > 1 else rules[:1]:
            default = getattr(model, "reduce", None)
            if rule is not None:
                model.reduce = rule
            try:  # the same seed, so every rule sees the same episodes
                g = torch.Generator().manual_seed(config.seed + 1000 * n + k)
                acc = accuracy(model, data["test"].sampler(n, k, config.test_query), config.test_episodes, g, device,
                               embedded=z)
            finally:
                if rule is not None:
                    model.reduce = default
            mean, ci = mean_ci95(100 * acc)
            setting = setting_name(n, k)
            metrics[key(config.method, setting, rule, "acc")] = mean.item()
            metrics[key(config.method, setting, rule, "ci95")] = ci.item()
    return metrics


def lake_error(model: nn.Module, device: torch.device | str = "cpu", root=None) -> float:
    """Lake et al. 2015's 20-way within-alphabet one-shot error (%), nearest support by the method's own score."""
    model.eval()

    def classify(support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:  # (20, 1, 28, 28) each
        labels = torch.arange(support.shape[0], device=support.device)[None]  # (1, 20)
        return model(support[None], labels, query[None], support.shape[0])[0].argmax(-1)  # (20,)
    return evaluate_lake(classify, root=root, device=device).error


def run_one(config: MetricConfig, device: torch.device | str = "cpu", checkpoint_dir=None,
            progress: bool | None = None, data: dict | None = None) -> dict[str, float]:
    """Train and evaluate one config; its metrics are named as in :func:`run`."""
    data = data if data is not None else load_split(config.split)
    name = run_name(config.method, config.split)
    ckpt = checkpoint_path(checkpoint_dir, f"omniglot-{name}", training_fields(config))
    tic = time.perf_counter()
    model, _ = fit(config, data, device, ckpt, progress)
    metrics = {key(name, "train_seconds"): time.perf_counter() - tic, key(name, "episodes"): config.episodes}
    tic = time.perf_counter()
    if config.split == "vinyals":
        metrics.update(evaluate(model, config, data, device))
    else:  # Lake's runs: "protonet/lake20/error" (background set), "protonet/minimal/lake20/error"
        lake = config.method if config.split == "background" else name
        metrics[key(lake, "lake20", "error")] = lake_error(model, device)
    metrics[key(name, "eval_seconds")] = time.perf_counter() - tic
    return metrics


def run(configs: list[MetricConfig], device: torch.device | str = "cpu", checkpoint_dir=None,
        progress: bool | None = None, jobs: int = 1, threads: int | None = None) -> dict[str, float]:
    """Train and evaluate each config: ``"{method}/{n}w{k}s/acc"`` on the 1200-character split,
    ``"{method}/lake20/error"`` trained on the background set, ``"{method}/minimal/lake20/error"`` on small1.

    ``jobs > 1`` trains that many configs at once in worker processes of ``threads`` torch threads each,
    taking the configs in the given order as workers free up (put the longest first). Each run is seeded
    by its config alone, so the metrics do not depend on ``jobs``.
    """
    metrics: dict[str, float] = {}
    if jobs == 1:
        cache: dict[str, dict] = {}
        for config in configs:
            data = cache.setdefault(config.split, load_split(config.split))
            metrics.update(run_one(config, device, checkpoint_dir, progress, data))
        return metrics
    for part in map_runs(run_one, configs, jobs, threads, device=str(device), checkpoint_dir=checkpoint_dir,
                         progress=progress):
        metrics.update(part)
    return metrics


def full_configs(mode: str | None = None) -> list[MetricConfig]:
    """The runs of ``python -m mapping.reproduce omniglot-metric``: each method on the 1200-character split,
    and Prototypical Networks on Lake's background and minimal sets for his 20 one-shot runs.

    Full budgets (at most about an hour of training per method on 2 CPU cores), chosen from a sweep of
    training ways and lengths: 1-shot episodes throughout (Snell et al. match the training shot to the test
    shot; 5-shot training gave lower 1-shot accuracy and higher Lake errors), 60-way for Prototypical
    Networks as in their paper, 20-way for Matching and Siamese networks, whose loss is cheaper per class.
    """
    full = budget.mode(mode) == "full"
    protonet = MetricConfig.for_mode("protonet", mode=mode, **(dict(train_way=60, episodes=5000, halve_every=1700)
                                                                if full else {}))
    matching = MetricConfig.for_mode("matching", mode=mode, **(dict(train_way=20, episodes=8000, halve_every=2700)
                                                                if full else {}))
    siamese = MetricConfig.for_mode("siamese", mode=mode, **(dict(train_way=20, episodes=6000, halve_every=2000)
                                                              if full else {}))
    background = replace(protonet, split="background", **(BACKGROUND_FULL if full else {}))
    minimal = replace(protonet, split="minimal", **(dict(episodes=800, halve_every=400) if full else
                                                    dict(episodes=max(1, protonet.episodes * 2 // 5))))
    return [protonet, matching, siamese, background, minimal]
