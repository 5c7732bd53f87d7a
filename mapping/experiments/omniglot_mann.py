"""Model-based meta-learning on Omniglot: a memory-augmented network against an LSTM (Santoro et al. 2016, §4.1).

Episodes (:func:`mapping.data.sequences.episode_sequences`): ``n_way`` = 5 characters, ``instances`` = 10 drawings
of each in a random order (50 steps), labels shuffled anew in every episode and given one step late. Images are
20x20 as in the paper, flattened to 400 inputs. Training characters are the first 1200 (with 90-degree rotations
as new characters), test characters the other 423, never seen in training (:func:`mapping.data.vinyals_split`).
Both models see the same episodes in the same order and take the same number of Adam steps; the test reports
accuracy at the 1st, 2nd, ... 10th presentation of a class (the paper's Table 1) on ``test_episodes`` episodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_ints
from .. import budget
from ..data import vinyals_split
from ..data.sequences import accuracy_by_instance, episode_sequences, offset_labels
from ..meta.mann import MANN, LSTMLearner
from ..results import metric_key
from ..train import train

MODELS = ("mann", "lstm")
LABELS = {"mann": "MANN (LRUA)", "lstm": "LSTM"}
INSTANCES = (1, 2, 3, 4, 5, 10)  # the columns of the paper's Table 1
PAPER = {"mann": (36.4, 82.8, 91.0, 92.6, 94.9, 98.1), "lstm": (24.4, 49.5, 55.3, 61.0, 63.6, 62.5),
         "humans": (34.5, 57.3, 70.1, 71.8, 81.4, 92.4)}  # REFERENCE.md


@dataclass(frozen=True)
class MannConfig:
    """One training run per model in ``models``; ``iterations`` Adam steps on batches of ``batch`` episodes."""

    models: tuple[str, ...] = MODELS
    n_way: int = 5
    instances: int = 10
    size: int = 20  # image side, as in the paper
    batch: int = 16
    iterations: int = 20_000  # 320,000 episodes; under an hour on one CPU thread for the MANN
    lr: float = 1e-3
    clip: float = 10.0  # gradient-norm clipping
    test_episodes: int = 1000
    controller: int = 200
    key_strength: bool = True  # a learned sharpness of the reads (see mapping.meta.MANN); False: the paper's
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if not self.models or unknown:
            raise ValueError(f"models must be a non-empty tuple from {MODELS}, got {self.models!r}")
        check_ints(self, positive=("n_way", "instances", "size", "batch", "test_episodes", "controller"),
                   non_negative=("iterations",))

    @classmethod
    def for_mode(cls, mode: str | None = None, **overrides) -> "MannConfig":
        sizes = budget.pick(smoke=dict(iterations=40, test_episodes=20, controller=32, batch=4),
                            # quick: too short for the memory to be used (the stored curve leaves chance after
                            # about 2,000 batches); 0.23 s per MANN batch on one CPU thread
                            quick=dict(iterations=100, test_episodes=100),
                            full={}, mode_=mode)
        return cls(**{**sizes, **overrides})


def key(model: str, *rest: object) -> str:
    """The metric keys :func:`run` writes: ``key("mann", "acc", 2)`` -> ``"mann/acc/2"`` (accuracy, %, at the
    second presentation), ``key("lstm", "train_seconds")``."""
    return metric_key(model, *rest)


def build(model: str, config: MannConfig) -> nn.Module:
    """A fresh :class:`~mapping.meta.MANN` (the paper's sizes) or :class:`~mapping.meta.LSTMLearner`."""
    inputs = config.size * config.size
    if model == "mann":
        return MANN(inputs, config.n_way, controller=config.controller, key_strength=config.key_strength)
    if model == "lstm":
        return LSTMLearner(inputs, config.n_way, hidden=config.controller)
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def episode_loss(model: nn.Module, x: Tensor, y: Tensor, n_way: int) -> tuple[Tensor, Tensor]:
    """Cross-entropy over every step of episodes ``x (B, T, inputs)``, ``y (B, T)``, and the logits ``(B, T, n)``."""
    logits = model(x, offset_labels(y, n_way))  # (B, T, n_way)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten()), logits


def load(config: MannConfig, root=None, **load_kwargs) -> dict:
    """``{"train", "test"}`` image tables at ``config.size`` (1200 characters x 4 rotations; 423)."""
    split = vinyals_split(root, size=config.size, **load_kwargs)
    return {"train": split["train"].images, "test": split["test"].images}


def fit(model_name: str, config: MannConfig, train_images: Tensor, progress: bool | None = None,
        checkpoint=None) -> tuple[nn.Module, dict]:
    """Train one model on episodes of ``train_images (classes, examples, H, W)``; returns it and its history.
    The episodes depend on ``config.seed`` alone, so both models see the same ones."""
    torch.manual_seed(config.seed)
    model = build(model_name, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    episodes = torch.Generator().manual_seed(config.seed)

    def step(_: int) -> dict[str, float]:
        x, y = episode_sequences(train_images, config.n_way, config.instances, config.batch, episodes)
        loss, logits = episode_loss(model, x, y, config.n_way)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        acc = accuracy_by_instance(logits.detach(), y, config.instances)  # (instances,)
        return {"loss": loss.item(), "acc1": acc[0].item(), "acc2": acc[1].item()}

    history = train(step, config.iterations, state={"model": model, "optimizer": optimizer, "episodes": episodes},
                    checkpoint=checkpoint, checkpoint_every=1000, desc=LABELS[model_name], progress=progress,
                    log_every=max(1, config.iterations // 200))
    return model, history


@torch.no_grad()
def evaluate(model: nn.Module, config: MannConfig, test_images: Tensor, chunk: int = 100) -> Tensor:
    """Accuracy (%) at each presentation 1..instances of a class, over ``test_episodes`` episodes: ``(instances,)``.
    The episodes are drawn from a generator of their own, the same for every model."""
    generator = torch.Generator().manual_seed(10_000 + config.seed)
    right = torch.zeros(config.instances, dtype=torch.float64)
    for start in range(0, config.test_episodes, chunk):
        n = min(chunk, config.test_episodes - start)
        x, y = episode_sequences(test_images, config.n_way, config.instances, n, generator)
        _, logits = episode_loss(model.eval(), x, y, config.n_way)
        right += n * accuracy_by_instance(logits, y, config.instances)  # every episode has each instance once
    return 100 * right / config.test_episodes  # (instances,)


def run(config: MannConfig, data: dict | None = None, progress: bool | None = None,
        checkpoint_dir=None) -> tuple[dict[str, float], dict]:
    """Train and test each model: ``"{model}/acc/{i}"`` for the paper's instances, ``"{model}/train_seconds"``,
    ``"{model}/final_loss"``; and the training curves ``{model: [(iteration, loss, acc1, acc2), ...]}``."""
    from pathlib import Path
    data = data if data is not None else load(config)
    metrics: dict[str, float] = {}
    curves: dict[str, list] = {}
    for name in config.models:
        ckpt = Path(checkpoint_dir) / f"omniglot-mann-{name}-s{config.seed}-{config.iterations}.pt" \
            if checkpoint_dir else None
        model, history = fit(name, config, data["train"], progress, ckpt)
        metrics[key(name, "train_seconds")] = history["seconds"]  # over every resumed part
        acc = evaluate(model, config, data["test"])  # (instances,)
        for i in INSTANCES:
            if i <= config.instances:
                metrics[key(name, "acc", i)] = acc[i - 1].item()
        curves[name] = [(h["iteration"], h["loss"], h["acc1"], h["acc2"]) for h in history["train"]]
        if curves[name]:
            metrics[key(name, "final_loss")] = curves[name][-1][1]
    return metrics, curves


__all__ = ["INSTANCES", "LABELS", "MODELS", "MannConfig", "PAPER", "build", "episode_loss", "evaluate", "fit", "key",
           "load", "run"]
