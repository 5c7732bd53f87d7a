"""Optimization-based meta-learning on Omniglot: MAML, first-order MAML, ANIL, Meta-SGD and Reptile on Conv-4.

Setup of Finn et al. 2017 (§5.2 and their code): the strided Conv-4 (``Conv4(n_way, strided=True)``, 64 filters,
spatial mean before the head), the 1200/423 character split with 90-degree rotations as new training classes
(:func:`mapping.data.vinyals_split`), 28x28 images, Adam on the meta-loss. 5-way: one inner step with
``alpha`` 0.4 in training, three at test, 32 tasks per meta-batch; 20-way: five steps with ``alpha`` 0.1, 16 tasks.
The paper draws ``k_shot`` query images per class; ``query`` sets that number here.

**Batch norm** (:mod:`mapping.nn.conv4`): ``bn="batch"`` normalises every call with its own statistics, as
MAML's code does. At test time that makes a query's prediction depend on the other queries of its task
(*transductive*). :func:`accuracy` reports both that and the non-transductive evaluation of Nichol et al. 2018
(§6): each query is classified in a batch made of the support set and that query alone, so it sees no other
query. The support set is always normalised with its own statistics while adapting.

Methods: ``maml`` (second order), ``fomaml`` (first order), ``anil`` (inner loop on the head only, Raghu et al.
2020), ``metasgd`` (a learned rate per parameter, Li et al. 2017) and ``reptile`` (Nichol et al. 2018, with their
Omniglot settings, :data:`REPTILE`: five inner Adam steps with ``beta1 = 0`` on the support and query images of a
task together (10 per class), five tasks per meta-batch, an outer SGD step on ``theta - mean theta'`` whose size
falls linearly from 1 to 0, and 50 inner steps at test time; each inner step uses all of the task's images, not
their minibatches of 10).
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

from .checks import check_ints
from .. import budget
from ..data import vinyals_split
from ..data.tasks import TaskBatch
from ..device import autocast
from ..meta import ANIL, FOMAML, MAML, MetaSGD, Reptile
from ..nn import Conv4
from ..nn.norms import primitive_norms
from ..results import metric_key
from ..stats import mean_ci95
from ..train import train
from .pool import map_runs
from .runner import checkpoint_path, config_key, training_fields

METHODS = ("maml", "fomaml", "anil", "metasgd", "reptile")
LABELS = {"maml": "MAML", "fomaml": "first-order MAML", "anil": "ANIL", "metasgd": "Meta-SGD",
          "reptile": "Reptile"}
EVALUATIONS = ("transductive", "per_query")
PAPER = {"maml": (98.7, 99.9, 95.8, 98.9), "fomaml": (98.3, 99.2, 89.4, 97.9),
         "reptile": (95.39, 98.90, 88.14, 96.65)}  # 5w1s, 5w5s, 20w1s, 20w5s; REFERENCE.md (Reptile non-transductive)
# Where each row of PAPER comes from: Finn et al. give MAML's and first-order MAML's ("MAML, first order approx.")
# in their Table 1; Nichol et al.'s Omniglot table (Table 2) quotes both as transductive and gives Reptile's.
PAPER_SOURCE = {"maml": "Finn et al. 2017, Table 1", "fomaml": "Finn et al. 2017, Table 1 (first order approx.)",
                "reptile": "Nichol et al. 2018, Table 2 (non-transductive)"}


TEST_FIELDS = ("test_tasks", "test_query", "wide_query", "test_steps")  # the fields that do not change training
REPTILE = dict(alpha=1e-3, steps=5, test_steps=50, meta_lr=1.0, meta_batch=5, query=9)  # Nichol et al., §6, App. A


@dataclass(frozen=True)
class MamlConfig:
    """One meta-training run: ``iterations`` Adam steps on meta-batches of ``meta_batch`` tasks."""

    method: str = "maml"
    n_way: int = 5
    k_shot: int = 1
    query: int = 1  # query images per class in meta-training (the paper: k_shot)
    meta_batch: int = 32
    alpha: float = 0.4
    steps: int = 1
    test_steps: int = 3
    meta_lr: float = 1e-3
    iterations: int = 6500  # about an hour on 2 CPU cores for MAML (0.51 s per meta-iteration measured)
    test_tasks: int = 600
    test_query: int = 1  # query images per class at test time: the paper's (as many as shots), hence its batch norm
    wide_query: int = 5  # also scored with this many per class, to show what the query batch does to batch norm
    hidden: int = 64
    chunk_size: int = 32  # tasks per vmapped chunk: the whole meta-batch (0.51 s against 1.2 s in chunks of 8)
    seed: int = 0
    amp: bool = False  # bfloat16 autocast in meta-training, CUDA only (mapping.device.autocast)

    def __post_init__(self) -> None:
        if not isinstance(self.amp, bool):
            raise ValueError(f"amp must be a bool, got {self.amp!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        check_ints(self, positive=("n_way", "k_shot", "query", "meta_batch", "steps", "test_steps", "test_tasks",
                                   "test_query", "wide_query", "hidden", "chunk_size"), non_negative=("iterations",))

    @property
    def setting(self) -> str:
        return f"{self.n_way}w{self.k_shot}s"

    @classmethod
    def for_mode(cls, method: str = "maml", mode: str | None = None, **overrides) -> "MamlConfig":
        sizes = budget.pick(smoke=dict(iterations=4, meta_batch=4, test_tasks=8, hidden=16),
                            # quick: half the paper's width and half its meta-batch (each 3-4x cheaper per MAML
                            # iteration on one CPU thread); 200 iterations reached 76% (MAML), 72% (first-order) and
                            # 64% (ANIL) on 100 test tasks, MAML's training 17 s of CPU on a busy machine
                            quick=dict(iterations=200, meta_batch=16, hidden=32, test_tasks=100),
                            full={}, mode_=mode)
        own = REPTILE if method == "reptile" else {}  # Reptile's own settings, then the mode's sizes
        merged = {**own, **sizes}
        if "meta_batch" in own and "meta_batch" in sizes:  # a mode shrinks Reptile's meta-batch, never grows it
            merged["meta_batch"] = min(own["meta_batch"], sizes["meta_batch"])
        return cls(method=method, **{**merged, **overrides})

    @classmethod
    def paper(cls, method: str, n_way: int, k_shot: int, **overrides) -> "MamlConfig":
        """Finn et al.'s setting for ``n_way``-way (5: alpha 0.4, 1 step, 32 tasks; 20: alpha 0.1, 5 steps, 16
        tasks), 60,000 iterations, ``k_shot`` queries per class."""
        five = n_way == 5
        return cls(method=method, n_way=n_way, k_shot=k_shot, query=k_shot, test_query=k_shot,
                   alpha=0.4 if five else 0.1,
                   steps=1 if five else 5, test_steps=3 if five else 5, meta_batch=32 if five else 16,
                   iterations=60_000, **overrides)


def build(config: MamlConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The method around a fresh strided Conv-4 with a ``n_way`` head and per-call batch statistics."""
    torch.manual_seed(config.seed)
    model = Conv4(config.n_way, hidden=config.hidden, bn="batch", strided=True).to(device)
    kw = dict(alpha=config.alpha, steps=config.steps, execution="chunk", chunk_size=config.chunk_size)
    if config.method == "reptile":
        return Reptile(model, use_query=True, inner="adam", **kw)
    cls = {"maml": MAML, "fomaml": FOMAML, "anil": ANIL, "metasgd": MetaSGD}[config.method]
    return cls(model, **kw)


def fit(config: MamlConfig, train_split, device: torch.device | str = "cpu", checkpoint=None,
        progress: bool | None = None) -> tuple[nn.Module, dict]:
    """Meta-train on ``train_split`` (an :class:`~mapping.data.OmniglotSplit`); returns the learner and history."""
    learner = build(config, device)
    sampler = train_split.sampler(config.n_way, config.k_shot, config.query)
    tasks = torch.Generator().manual_seed(config.seed)
    reptile = config.method == "reptile"
    optimizer = (torch.optim.SGD if reptile else torch.optim.Adam)(learner.parameters(), lr=config.meta_lr)
    # Reptile's outer step size falls linearly to 0 over the run; the others keep Adam's rate
    anneal = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: 1 - it / max(1, config.iterations) if reptile else 1.0)

    def step(_: int) -> dict[str, float]:
        batch = sampler.sample(config.meta_batch, tasks).to(device)
        optimizer.zero_grad(set_to_none=True)
        if reptile:
            with autocast(device, config.amp):
                loss = learner.meta_loss(batch, F.cross_entropy)
                loss.backward()
        else:
            with autocast(device, config.amp):
                loss = learner.meta_loss(batch, F.cross_entropy)
            loss.backward()  # the chunked execution hands over gradients it computed chunk by chunk
        optimizer.step()
        anneal.step()
        return {"loss": loss.item()}

    history = train(step, config.iterations, state={"learner": learner, "optimizer": optimizer, "anneal": anneal,
                                                    "tasks": tasks},
                    checkpoint=checkpoint, checkpoint_every=500, desc=LABELS[config.method], progress=progress,
                    log_every=max(1, config.iterations // 200))
    return learner, history


def predict(forward, fast: dict[str, Tensor], support_x: Tensor, query_x: Tensor, evaluation: str) -> Tensor:
    """Logits of one task's queries ``(q, n_way)`` with adapted parameters ``fast``. ``"transductive"``: all
    queries in one call (batch statistics over the queries); ``"per_query"``: each query in a call with the
    support set only (batch statistics over support + that query)."""
    if evaluation == "transductive":
        return forward(fast, query_x)  # (q, n_way)
    if evaluation != "per_query":
        raise ValueError(f"evaluation must be one of {EVALUATIONS}, got {evaluation!r}")

    def one(x: Tensor) -> Tensor:  # x (C, H, W)
        return forward(fast, torch.cat([support_x, x[None]]))[-1]  # (n_way,)
    return vmap(one)(query_x)  # (q, n_way)


@torch.no_grad()
def classify_batch(learner: nn.Module, batch: TaskBatch, steps: int, evaluations=EVALUATIONS) -> dict[str, Tensor]:
    """Predicted class of each query of each task after ``steps`` inner steps on its support set,
    ``{evaluation: (tasks, q)}``; ``evaluations`` a name or a tuple of names from :data:`EVALUATIONS`."""
    single = isinstance(evaluations, str)
    evaluations = (evaluations,) if single else tuple(evaluations)
    unknown = [e for e in evaluations if e not in EVALUATIONS]
    if unknown:
        raise ValueError(f"evaluations must come from {EVALUATIONS}, got {unknown}")
    with torch.enable_grad():  # the inner gradients; nothing is kept
        fast, _ = learner.adapted(batch.support_x, batch.support_y, F.cross_entropy, steps)  # {name: (tasks, ...)}
    out = {}
    with primitive_norms():
        for evaluation in evaluations:
            logits = vmap(lambda f, sx, qx: predict(learner.functional_call, f, sx, qx, evaluation))(
                fast, batch.support_x, batch.query_x)  # (tasks, q, n_way)
            out[evaluation] = logits.argmax(-1)  # (tasks, q)
    return out[evaluations[0]] if single else out


def accuracy(learner: nn.Module, batch: TaskBatch, steps: int, evaluations=EVALUATIONS) -> dict[str, Tensor]:
    """Query accuracy of each task after ``steps`` inner steps on its support set, ``{evaluation: (tasks,)}``."""
    predicted = classify_batch(learner, batch, steps, tuple(evaluations))
    return {e: (p == batch.query_y).double().mean(1) for e, p in predicted.items()}  # (tasks,) each


def key(method: str, setting: str, *rest: object) -> str:
    """The metric keys :func:`evaluate` and :func:`run_one` write: ``key("maml", "5w1s", "acc")``,
    ``key("maml", "5w1s", "q15", "per_query", "ci95")``, ``key("maml", "5w1s", "lake", "error")``; a ``None`` or
    ``""`` part (the default protocol, the default evaluation) is left out."""
    return metric_key(method, setting, *rest)


def evaluate(learner: nn.Module, config: MamlConfig, test_split, device: torch.device | str = "cpu",
             chunk: int = 50) -> dict[str, float]:
    """Accuracy in % over ``test_tasks`` tasks of the test characters, with a 95% CI: ``"{method}/{n}w{k}s/acc"``
    and ``/ci95`` (``test_query`` queries per class, transductive, as MAML's code), ``/per_query/acc`` and
    ``/per_query/ci95`` (the same tasks, one query at a time); the same four under ``/q{wide_query}/`` for tasks
    with ``wide_query`` queries per class (omitted when it equals ``test_query``)."""
    metrics = {}
    for q in dict.fromkeys((config.test_query, config.wide_query)):
        sampler = test_split.sampler(config.n_way, config.k_shot, q)
        generator = torch.Generator().manual_seed(10_000 + config.seed)
        parts: dict[str, list[Tensor]] = {e: [] for e in EVALUATIONS}
        for start in range(0, config.test_tasks, chunk):
            batch = sampler.sample(min(chunk, config.test_tasks - start), generator).to(device)
            for e, acc in accuracy(learner, batch, config.test_steps).items():
                parts[e].append(acc.cpu())
        for e, values in parts.items():
            mean, ci = mean_ci95(100 * torch.cat(values))
            part = (None if q == config.test_query else f"q{q}", None if e == "transductive" else e)
            metrics[key(config.method, config.setting, *part, "acc")] = mean.item()
            metrics[key(config.method, config.setting, *part, "ci95")] = ci.item()
    return metrics


def widen_head(learner: nn.Module, n_way: int) -> nn.Module:
    """The same method for ``n_way`` classes: the meta-learned body, and a head whose ``n_way`` rows all start as
    the mean of the learned rows (so every class starts with the same score, and the first inner step separates
    them; the replicated head of Ye & Chao 2022, without meta-training it). Used for Lake's 20-way runs."""
    old = learner.module
    model = Conv4(n_way, hidden=old.hidden, bn=old.bn, strided=old.strided).to(old.head.weight.device)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("head.")}
    state["head.weight"] = old.head.weight.detach().mean(0, keepdim=True).expand(n_way, -1).clone()
    state["head.bias"] = old.head.bias.detach().mean().expand(n_way).clone()
    model.load_state_dict(state)
    wide = learner.with_module(model)
    # the learner's own tensors too (Meta-SGD's learned rates): the body's as learned, the head's rows their mean
    target = wide.state_dict()
    wide.load_state_dict({k: v if v.shape == target[k].shape else v.mean(0, keepdim=True).expand_as(target[k])
                          for k, v in learner.state_dict().items() if not k.startswith("module.")}, strict=False)
    return wide


def lake_error(learner: nn.Module, steps: int, evaluation: str = "per_query", root=None,
               seen: Tensor | None = None) -> tuple[float, int]:
    """Lake et al. 2015's 20-way within-alphabet one-shot error (%) and the number of runs it is over: adapt a
    20-way head (:func:`widen_head`) for ``steps`` inner steps to a run's 20 drawings, then classify its 20 test
    drawings (``evaluation`` as in :func:`predict`). With ``seen`` (the training images), only the runs none of
    whose drawings were trained on (:func:`mapping.data.lake.unseen_runs`)."""
    from ..data import evaluate_lake, load_lake_runs
    from ..data.lake import unseen_runs
    runs = load_lake_runs(root)
    if seen is not None:
        runs = runs.subset(unseen_runs(runs, seen))
    wide = None

    def classify(support: Tensor, query: Tensor) -> Tensor:  # (20, 1, 28, 28) each
        nonlocal wide
        wide = wide or widen_head(learner, support.shape[0])
        labels = torch.arange(support.shape[0], device=support.device)  # (20,)
        batch = TaskBatch(support[None], labels[None], query[None], labels[None])
        return classify_batch(wide, batch, steps, evaluation)[0]  # (20,)
    return evaluate_lake(classify, runs=runs, device=next(learner.parameters()).device).error, runs.num_runs


def checkpoint_key(config: MamlConfig) -> str:
    """12 hex digits of the training fields' hash: test settings left out (a new test reuses the training), and
    ``amp`` left out when False, so float32 runs keep the names they had before the field existed."""
    return config_key(training_fields(config, TEST_FIELDS))


def run_one(config: MamlConfig, device: torch.device | str = "cpu", checkpoint_dir=None,
            progress: bool | None = None, data: dict | None = None) -> dict[str, float]:
    """Meta-train and test one config: the metrics of :func:`evaluate`; ``train_seconds`` (over every resumed
    part), ``eval_seconds``; Lake's one-shot error on the runs the split never trained on, ``lake/error`` (per query)
    and ``lake/transductive/error``, and how many runs that is, ``lake/runs``.
    The checkpoint's name depends on the training fields only, so a run with other test settings resumes it."""
    data = data if data is not None else vinyals_split()
    name = f"{config.method}/{config.setting}"
    ckpt = checkpoint_path(checkpoint_dir, f"omniglot-maml-{name}", training_fields(config, TEST_FIELDS))
    learner, history = fit(config, data["train"], device, ckpt, progress)
    run_key = functools.partial(key, config.method, config.setting)
    metrics = {run_key("train_seconds"): history["seconds"], run_key("iterations"): config.iterations}
    tic = time.perf_counter()
    metrics.update(evaluate(learner, config, data["test"], device))
    metrics[run_key("eval_seconds")] = time.perf_counter() - tic
    seen = data["train"].images[data["train"].rotation == 0]  # (characters, 20, H, W) the unrotated training images
    for evaluation in EVALUATIONS:
        part = None if evaluation == "per_query" else evaluation
        error, runs = lake_error(learner, config.test_steps, evaluation, seen=seen)
        metrics[run_key("lake", part, "error")], metrics[run_key("lake", "runs")] = error, runs
    return metrics


def run(configs: list[MamlConfig], device: torch.device | str = "cpu", checkpoint_dir=None,
        progress: bool | None = None, jobs: int = 1, threads: int | None = None) -> dict[str, float]:
    """:func:`run_one` for each config (``jobs`` at once, see :func:`~mapping.experiments.pool.map_runs`)."""
    metrics: dict[str, float] = {}
    for part in map_runs(run_one, configs, jobs, threads, device=str(device), checkpoint_dir=checkpoint_dir,
                         progress=progress):
        metrics.update(part)
    return metrics


def cpu_configs(mode: str | None = None, methods=("maml", "fomaml", "anil")) -> list[MamlConfig]:
    """The CPU runs of ``python -m mapping.reproduce omniglot-maml``: 5-way 1-shot, MAML's 5-way settings, a
    budget of about an hour of meta-training per method on 2 CPU cores."""
    return [MamlConfig.for_mode(m, mode) for m in methods]


def paper_configs(methods=("maml", "fomaml")) -> list[MamlConfig]:
    """``--setting paper``: Finn et al.'s four settings at 60,000 iterations (a GPU job)."""
    return [MamlConfig.paper(m, n, k) for m in methods for n, k in ((5, 1), (5, 5), (20, 1), (20, 5))]


__all__ = ["EVALUATIONS", "LABELS", "METHODS", "MamlConfig", "PAPER", "PAPER_SOURCE", "accuracy", "build",
           "checkpoint_key", "classify_batch", "cpu_configs", "evaluate", "fit", "key", "lake_error", "paper_configs",
           "predict", "run", "run_one", "widen_head"]
