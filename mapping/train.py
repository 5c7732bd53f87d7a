"""The one training loop every method uses: progress bar, periodic evaluation, atomic checkpoints, resume.

``step(iteration)`` does one optimisation step and returns scalar metrics (``"loss"`` at least);
``state`` names everything that must survive a restart (modules, optimizers, ``torch.Generator`` s).
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm  # a text bar: the same in a terminal, Jupyter, Colab and the built book (no widget JS)

from . import checkpoint as ckpt

Metrics = dict[str, float]


def _state_dict(obj: Any) -> Any:
    if isinstance(obj, torch.Generator):
        return obj.get_state()
    return obj.state_dict()


def _load_state(obj: Any, state: Any) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


def train(step: Callable[[int], Metrics], iterations: int, *, state: dict[str, Any] | None = None,
          evaluate: Callable[[], Metrics] | None = None, eval_every: int = 0,
          checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 1000,
          desc: str = "train", progress: bool | None = None, log_every: int = 1) -> dict[str, Any]:
    """Run ``step`` for ``iterations`` iterations; resume from ``checkpoint`` when it exists.

    Returns the history ``{"train": [{"iteration", metrics...}], "eval": [{"iteration", metrics...}],
    "seconds": wall seconds spent in the iterations}``; ``seconds`` adds up over resumed runs (the checkpoint keeps
    it), so a run that was interrupted reports the training time of all its parts.
    A non-finite loss raises ``FloatingPointError`` naming the iteration; the last checkpoint stays intact.
    Asking for fewer ``iterations`` than the checkpoint holds raises ``ValueError`` (nothing is overwritten).
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    state = state or {}
    history: dict[str, Any] = {"train": [], "eval": [], "seconds": 0.0}
    start = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        saved = ckpt.load(path)
        if int(saved["iteration"]) > iterations:
            raise ValueError(f"iterations={iterations} is fewer than the {int(saved['iteration'])} iterations that "
                             f"checkpoint={str(path)!r} holds already; ask for at least that many, or pass another "
                             "checkpoint path to start afresh (the checkpoint is left as it is)")
        if set(saved["state"]) != set(state):
            raise ValueError(f"checkpoint={str(path)!r} holds state {sorted(saved['state'])}, "
                             f"but state names {sorted(state)}")
        for name, obj in state.items():
            _load_state(obj, saved["state"][name])
        start, history = int(saved["iteration"]), {"seconds": 0.0, **saved["history"]}

    def save(iteration: int) -> None:
        if path is not None:
            ckpt.save({"iteration": iteration, "history": history,
                       "state": {k: _state_dict(v) for k, v in state.items()}}, path)

    show = progress if progress is not None else os.environ.get("MAPPING_PROGRESS", "1") != "0"
    bar = tqdm(range(start, iterations), desc=desc, initial=start, total=iterations, disable=not show, file=sys.stdout,
               mininterval=1.0, leave=True)
    tic = time.perf_counter()
    for it in bar:
        metrics = {k: float(v) for k, v in step(it).items()}
        loss = metrics.get("loss", 0.0)
        if not math.isfinite(loss):
            raise FloatingPointError(f"the training loss is not finite ({loss}) at iteration {it}; "
                                     f"the last checkpoint ({path}) is left as it was")
        done = it + 1
        if done % log_every == 0 or done == iterations:
            history["train"].append({"iteration": done, **metrics})
        if evaluate is not None and eval_every and (done % eval_every == 0 or done == iterations):
            history["eval"].append({"iteration": done, **{k: float(v) for k, v in evaluate().items()}})
        if done % max(1, checkpoint_every) == 0 or done == iterations:
            history["seconds"] += time.perf_counter() - tic
            tic = time.perf_counter()
            save(done)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
    bar.close()
    return history
