"""Sinusoid regression (Finn et al. 2017, §5.1): MAML, first-order MAML, Reptile, Meta-SGD, ANIL, pretrained.

Every method trains the 1-40-40-1 ReLU network for the same number of iterations on meta-batches of the
same tasks; all are evaluated on the same held-out tasks by fine-tuning with SGD on K = 5, 10, 20 points
for 0..10 steps and measuring the MSE on 100 query points (mean and 95% CI over ``eval_tasks`` tasks).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import budget, memo
from ..data import Sinusoid, TaskBatch
from ..meta import ANIL, FOMAML, MAML, MetaLearner, MetaSGD, Reptile, compile_seconds
from ..nn import sinusoid_mlp
from ..stats import diverged, step_summary
from ..train import train
from .pool import map_runs
from ..results import config_dict, metric_key
from .runner import checkpoint_path

METHODS = ("maml", "fomaml", "reptile", "metasgd", "anil", "pretrained")
LABELS = {"maml": "MAML", "fomaml": "first-order MAML", "reptile": "Reptile", "metasgd": "Meta-SGD",
          "anil": "ANIL", "pretrained": "pretrained on all tasks"}
# progress-bar names: short, so that a finished bar's line fits the book's 79-character column
SHORT = {"maml": "MAML", "fomaml": "FOMAML", "reptile": "Reptile", "metasgd": "Meta-SGD", "anil": "ANIL",
         "pretrained": "pretrained"}
REPORT_STEPS = (0, 1, 5, 10)
QUICK_ITERATIONS = 2500  # the book's live runs: 3.1 and 3.2 within their time budgets (see SinusoidConfig.for_mode)


@dataclass(frozen=True)
class SinusoidConfig:
    """The paper's setup; :meth:`for_mode` shrinks the iterations and evaluation for smoke and quick runs."""

    iterations: int = 70_000
    meta_batch: int = 25
    k_shot: int = 10
    q_query: int = 10
    alpha: float = 0.01
    inner_steps: int = 1
    reptile_steps: int = 5
    meta_lr: float = 1e-3
    hidden: int = 40
    eval_tasks: int = 600
    eval_query: int = 100
    eval_shots: tuple[int, ...] = (5, 10, 20)
    eval_steps: int = 10
    alpha_grid: tuple[float, ...] = (0.001, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.03, 0.1)
    seed: int = 0
    methods: tuple[str, ...] = field(default=METHODS)
    compile: bool = False  # torch.compile the meta-steps (mapping.meta.compiled): pays off over thousands of steps

    def __post_init__(self) -> None:
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")

    @classmethod
    def for_mode(cls, mode: str | None = None, **overrides) -> "SinusoidConfig":
        sizes = budget.pick(smoke=dict(iterations=300, eval_tasks=100),
                            quick=dict(iterations=QUICK_ITERATIONS, eval_tasks=600), full=dict(compile=True), mode_=mode)
        return cls(**{**sizes, **overrides})


def build(method: str, config: SinusoidConfig) -> nn.Module:
    """The wrapper for ``method`` around a fresh 1-40-40-1 network (initialised from the torch seed)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    net = sinusoid_mlp(config.hidden)
    # tiny model: one vmap is fastest
    kw = dict(alpha=config.alpha, steps=config.inner_steps, execution="vmap", compile=config.compile)
    return {"maml": lambda: MAML(net, **kw), "fomaml": lambda: FOMAML(net, **kw),
            "metasgd": lambda: MetaSGD(net, **kw), "anil": lambda: ANIL(net, **kw),
            "reptile": lambda: Reptile(net, alpha=config.alpha, steps=config.reptile_steps, execution="vmap",
                                       compile=config.compile),
            # the baseline trains the network by regression; the wrapper fine-tunes it as MAML's inner loop does
            "pretrained": lambda: MAML(net, alpha=config.alpha, steps=config.inner_steps, execution="vmap")}[method]()


def meta_train(method: str, config: SinusoidConfig, device: torch.device | str = "cpu",
               checkpoint: str | Path | None = None, progress: bool | None = None) -> tuple[nn.Module, dict]:
    """Train ``method`` for ``config.iterations`` iterations; returns the trained wrapper and its history."""
    torch.manual_seed(config.seed)
    model = build(method, config).to(device)
    tasks = Sinusoid.maml()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.meta_lr, fused=True)  # one kernel per step

    def step(_: int) -> dict[str, float]:
        batch = tasks.sample(config.meta_batch, config.k_shot, config.q_query, generator).to(device)
        optimizer.zero_grad(set_to_none=True)
        if method == "pretrained":  # ordinary regression on every point of every task
            x = torch.cat([batch.support_x, batch.query_x], 1)  # (tasks, shots, 1)
            y = torch.cat([batch.support_y, batch.query_y], 1)  # (tasks, shots, 1)
            loss = F.mse_loss(model(x), y)
        else:  # every meta-learner, Reptile included (mapping.meta.protocol)
            loss = model.meta_loss(batch, F.mse_loss)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item()}

    validation = eval_tasks(SinusoidConfig(eval_tasks=100, seed=config.seed), config.k_shot, device, offset=30_000)

    def evaluate() -> dict[str, float]:  # query MSE after one step on 100 validation tasks
        return {"val_mse_step1": curve(method, model, validation, 1, check=False)[:, 1].mean().item()}

    history = train(step, config.iterations, state={"model": model, "optimizer": optimizer, "tasks": generator},
                    evaluate=evaluate, eval_every=max(1, config.iterations // 20), checkpoint=checkpoint,
                    checkpoint_every=5000, desc=SHORT[method], progress=progress,
                    log_every=max(1, config.iterations // 200))
    return model, history


TRAINING_FIELDS = ("iterations", "meta_batch", "k_shot", "q_query", "alpha", "inner_steps", "reptile_steps",
                   "meta_lr", "hidden", "seed", "compile")  # what meta_train reads; evaluation fields are not


def trained(method: str, config: SinusoidConfig, device: torch.device | str = "cpu",
            progress: bool | None = None) -> tuple[nn.Module, dict, bool]:
    """:func:`meta_train`, done once per build: the trained weights and history are kept by :mod:`mapping.memo`
    under the method, the training fields of ``config`` and the device, so that a second page asking for the same
    training (3.1 and 3.2 both train MAML and the pretrained baseline) reads it back. Returns the model, its
    history and whether it was read back (True) or trained here (False)."""
    key = {**{f: getattr(config, f) for f in TRAINING_FIELDS}, "device": str(torch.device(device)),
           "state": "learner"}  # every method's state is its learner's (the pretrained net's inside MAML)
    name = f"sinusoid-{method}"
    stored = memo.path(name, key).is_file()
    calls = []

    def compute() -> dict:
        model, history = meta_train(method, config, device, progress=progress)
        calls.append(model)
        return {"state": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "history": history}

    value = memo.cached(name, key, compute)
    if calls:
        return calls[0], value["history"], False
    torch.manual_seed(config.seed)
    model = build(method, config).to(device)
    model.load_state_dict(value["state"])
    return model, value["history"], stored


def eval_tasks(config: SinusoidConfig, k_shot: int, device: torch.device | str = "cpu",
               offset: int = 10_000) -> TaskBatch:
    """Held-out tasks, the same for every method: seeded by ``seed + offset + k_shot``."""
    g = torch.Generator().manual_seed(config.seed + offset + k_shot)
    return Sinusoid.maml().sample(config.eval_tasks, k_shot, config.eval_query, g).to(device)


def curve(method: str, model: MetaLearner, batch: TaskBatch, steps: int, alpha: float | None = None,
          check: bool = True) -> torch.Tensor:
    """Query MSE after 0..steps fine-tuning steps, ``(tasks, steps + 1)``, with the method's own inner loop
    (:meth:`~mapping.meta.MetaLearner.adaptation_curve`; the pretrained baseline's wrapper fine-tunes by SGD).

    With ``check=False`` a task whose fine-tuning diverges gives non-finite entries instead of an error.
    ``method`` is kept for the callers' symmetry; every model answers the same call.
    """
    return model.adaptation_curve(batch, F.mse_loss, steps, alpha, check)


@torch.no_grad()
def fits(model: MetaLearner, support_x: torch.Tensor, support_y: torch.Tensor, grid: torch.Tensor,
         steps: tuple[int, ...] = (0, 1, 10), alpha: float | None = None) -> dict[int, torch.Tensor]:
    """Predictions on ``grid`` (points, 1) after each number of ``steps`` on one task's ``(shots, 1)`` support."""
    out = {}
    for s in steps:
        fast, _ = model.adapted(support_x[None], support_y[None], F.mse_loss, s, alpha=alpha)  # {name: (1, ...)}
        out[s] = model.functional_call({k: v[0] for k, v in fast.items()}, grid)[:, 0]  # (points,)
    return out


TUNABLE = ("maml", "fomaml", "reptile", "anil", "pretrained")  # Meta-SGD's rates are learned, not tuned


def tune_alpha(method: str, model: nn.Module, config: SinusoidConfig, k_shot: int,
               device: torch.device | str = "cpu") -> float:
    """The paper's 'automatically tuned step size': the rate in ``config.alpha_grid`` with the lowest query MSE
    after ``eval_steps`` steps on validation tasks with ``k_shot`` points (never the test tasks). A rate under
    which fine-tuning diverges (:func:`mapping.stats.diverged`) on any validation task at any step is no
    candidate."""
    val = eval_tasks(config, k_shot, device, offset=20_000)
    scores = {}
    for a in config.alpha_grid:
        losses = curve(method, model, val, config.eval_steps, a, check=False)  # (tasks, steps + 1)
        scores[a] = float("inf") if diverged(losses).any() else losses[:, -1].mean().item()
    return min(scores, key=scores.get)


def key(method: str, k: int | None, *rest: object) -> str:
    """The metric keys :func:`evaluate` and :func:`run_method` write: ``key("maml", 5, "step1", "mse")`` ->
    ``"maml/k5/step1/mse"``, ``key("maml", 5, "tuned", "alpha")``; ``k=None`` for a method's own numbers
    (``key("maml", None, "train_seconds")``)."""
    return metric_key(method, None if k is None else f"k{k}", *rest)


def cost_table(record: dict) -> str:
    """Chapter 7's table of a stored paper-length run (``results/sinusoid.json``): per method, its training
    seconds, of which compiling (``eager`` without), the 5-shot median query MSE after one step and the share
    (%) of tasks diverged by step 10; a ``KeyError`` naming a missing metric."""
    from ..report import markdown_table
    m = record["metrics"]
    compiled = lambda name: f"{m[key(name, None, 'compile_seconds')]:.0f}" \
        if key(name, None, "compile_seconds") in m else "eager"  # noqa: E731  (an eager run has none)
    rows = [[name, f"{m[key(name, None, 'train_seconds')]:.0f}", compiled(name),
             f"{m[key(name, 5, 'step1', 'median')]:.3f}", f"{100 * m[key(name, 5, 'step10', 'diverged')]:.1f}"]
            for name in record["config"]["methods"]]
    return markdown_table(["method", "training s (70,000 iterations)", "of which compiling",
                           "5-shot median MSE, 1 step", "% of tasks diverged by step 10"], rows)


def _summarise(prefix: str, losses: torch.Tensor, metrics: dict[str, float]) -> None:
    """Per step ``s``: ``{prefix}/step{s}/diverged`` (share of tasks), ``/median``, ``/q25``, ``/q75`` of the
    others, and ``/mse`` with ``/ci95`` only where no task diverged (:func:`mapping.stats.step_summary`)."""
    for s, row in enumerate(step_summary(losses)):
        for stat, value in row.items():
            metrics[metric_key(prefix, f"step{s}", "mse" if stat == "mean" else stat)] = value


def evaluate(method: str, model: nn.Module, config: SinusoidConfig, device: torch.device | str = "cpu",
             shots: tuple[int, ...] | None = None, tuned: bool = True) -> dict[str, float]:
    """Flat metrics for every K and s = 0..eval_steps, fine-tuning on the held-out tasks:

    * ``"{method}/k{K}/step{s}/mse"`` and ``".../ci95"``: with the rate the method was trained with (``alpha``,
      Meta-SGD's learned rates); for the pretrained baseline, with the tuned rate (the paper's protocol);
    * ``"{method}/k{K}/tuned/step{s}/mse"``: with the rate tuned on validation tasks (``.../tuned/alpha``).

    Every step also gets ``".../diverged"`` (the share of tasks on which fine-tuning diverged, by the one
    definition of :mod:`mapping.stats`) and ``".../median"``, ``".../q25"``, ``".../q75"`` of the other tasks;
    where any task diverged there is no ``".../mse"``, since a mean over a few exploding tasks says nothing.

    ``shots`` (default ``config.eval_shots``) picks the K evaluated; ``tuned=False`` leaves out the ``.../tuned/``
    curves of the meta-learners (a page that shows only their training rate); the pretrained baseline is always
    fine-tuned with its tuned rate.
    """
    metrics: dict[str, float] = {}
    for k in config.eval_shots if shots is None else shots:
        test = eval_tasks(config, k, device)
        wanted = method in TUNABLE and (tuned or method == "pretrained")
        rate = tune_alpha(method, model, config, k, device) if wanted else None
        if rate is not None:
            metrics[key(method, k, "tuned", "alpha")] = rate
            _summarise(key(method, k, "tuned"), curve(method, model, test, config.eval_steps, rate, check=False),
                       metrics)
        alpha = rate if method == "pretrained" else None
        _summarise(key(method, k), curve(method, model, test, config.eval_steps, alpha, check=False), metrics)
    return metrics


LONGEST_FIRST = ("maml", "metasgd", "reptile", "anil", "fomaml", "pretrained")  # for run(..., jobs=2)


def run_method(method: str, config: SinusoidConfig, device: torch.device | str = "cpu",
               checkpoint_dir: str | Path | None = None, progress: bool | None = None
               ) -> tuple[dict[str, float], nn.Module, dict]:
    """Train and evaluate one method; returns its metrics, the trained model and its history."""
    tic = time.perf_counter()
    ckpt = checkpoint_path(checkpoint_dir, f"sinusoid-{method}", config_dict(config))
    model, history = meta_train(method, config, device, ckpt, progress)
    metrics = {key(method, None, "train_seconds"): time.perf_counter() - tic}
    if compile_seconds(model) is not None:  # part of train_seconds
        metrics[key(method, None, "compile_seconds")] = compile_seconds(model)
    metrics.update(evaluate(method, model, config, device))
    return metrics, model, history


def _method_metrics(job: tuple[str, SinusoidConfig], **kwargs) -> dict[str, float]:
    """:func:`run_method`'s metrics, for a worker process (models do not cross processes)."""
    return run_method(*job, **kwargs)[0]


def run(config: SinusoidConfig, device: torch.device | str = "cpu", checkpoint_dir: str | Path | None = None,
        progress: bool | None = None, jobs: int = 1, threads: int | None = None
        ) -> tuple[dict[str, float], dict[str, nn.Module], dict[str, dict]]:
    """Train and evaluate every method of ``config.methods``; returns metrics, models and histories.

    With ``jobs > 1`` the methods train at once in worker processes of ``threads`` torch threads each
    (:func:`~mapping.experiments.pool.map_runs`, longest first); then only the metrics come back (no models or
    histories), and they do not depend on ``jobs``.
    """
    if jobs != 1:
        order = [m for m in LONGEST_FIRST if m in config.methods]
        parts = map_runs(_method_metrics, [(m, config) for m in order], jobs, threads, device=str(device),
                         checkpoint_dir=checkpoint_dir, progress=progress)
        return {k: v for part in parts for k, v in part.items()}, {}, {}
    metrics: dict[str, float] = {}
    models, histories = {}, {}
    for method in config.methods:
        part, models[method], histories[method] = run_method(method, config, device, checkpoint_dir, progress)
        metrics.update(part)
    return metrics, models, histories
