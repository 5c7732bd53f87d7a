"""Summary statistics for evaluation over many held-out tasks, and the book's one definition of divergence.

**Divergence.** Fine-tuning has *diverged* on a task at step ``s`` when the task's query loss after ``s``
steps is not finite or exceeds :data:`DIVERGENCE_FACTOR` (10) times its loss before fine-tuning (step 0).
A step at which any task diverged reports the diverged share and the median and quartiles of the other
tasks, never a mean: a mean over tasks where a few explode measures only those few.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

DIVERGENCE_FACTOR = 10.0


def accuracy(scores: Tensor, labels: Tensor) -> float:
    """The book's one accuracy, a fraction in [0, 1]: the share of rows whose largest score is the label,
    ``mean(argmax(scores, -1) == labels)`` over ``scores (..., classes)`` and ``labels (...)`` (a record's
    percentage is ``100 *`` this); NaN for no rows."""
    if not isinstance(scores, Tensor) or not isinstance(labels, Tensor) or scores.shape[:-1] != labels.shape:
        raise ValueError(f"scores must be (..., classes) and labels (...) with the same leading shape, got "
                         f"{tuple(getattr(scores, 'shape', ()))} and {tuple(getattr(labels, 'shape', ()))}")
    return (scores.argmax(-1) == labels).double().mean().item()


def mean_ci95(values: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Mean and half-width of the normal 95% confidence interval, ``1.96 * std / sqrt(n)``, along ``dim``."""
    if values.shape[dim] < 2:
        raise ValueError(f"values needs at least 2 entries along dim {dim} for a confidence interval, "
                         f"got shape {tuple(values.shape)}")
    values = values.double()
    n = values.shape[dim]
    return values.mean(dim), 1.96 * values.std(dim, unbiased=True) / math.sqrt(n)


def diverged(losses: Tensor, factor: float = DIVERGENCE_FACTOR) -> Tensor:
    """Which tasks diverged at which step: ``losses`` ``(tasks, steps + 1)``, column 0 before fine-tuning.

    True where the loss is not finite or above ``factor`` times the task's loss at step 0 (see the module
    docstring); a task whose step-0 loss is itself not finite counts as diverged at every step.
    """
    if losses.dim() != 2 or losses.shape[1] < 1:
        raise ValueError(f"losses must have shape (tasks, steps + 1) with column 0 the loss before fine-tuning, "
                         f"got shape {tuple(losses.shape)}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"factor must be a number above 1, got {factor!r}")
    before = losses[:, :1]  # (tasks, 1)
    return ~torch.isfinite(losses) | ~torch.isfinite(before) | (losses > factor * before)  # (tasks, steps + 1)


def step_summary(losses: Tensor, factor: float = DIVERGENCE_FACTOR) -> list[dict[str, float]]:
    """Per step ``s`` of ``losses`` ``(tasks, steps + 1)``: ``diverged`` (share of tasks, 0..1), ``median``,
    ``q25`` and ``q75`` of the tasks that did not diverge, and ``mean`` with ``ci95`` only where none did."""
    bad = diverged(losses, factor)  # (tasks, steps + 1)
    out = []
    for s in range(losses.shape[1]):
        ok = losses[~bad[:, s], s].double()  # (tasks kept,)
        row = {"diverged": bad[:, s].double().mean().item()}
        if ok.numel():
            q = torch.quantile(ok, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))  # (3,)
            row.update(q25=q[0].item(), median=q[1].item(), q75=q[2].item())
        if not bad[:, s].any() and losses.shape[0] > 1:
            mean, ci = mean_ci95(losses[:, s])
            row.update(mean=mean.item(), ci95=ci.item())
        out.append(row)
    return out


def t_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and half-width of Student's t 95% interval over a few seeds (``nan`` half-width with one value)."""
    from scipy.stats import t as student  # scipy comes with scikit-learn
    n = values.numel()
    half = float(student.ppf(0.975, n - 1)) * values.double().std().item() / math.sqrt(n) if n > 1 else math.nan
    return values.double().mean().item(), half


def seed_summary(per_seed: dict[str, list[float]], seeds: tuple[int, ...],
                 prefix: Callable[[str], str] = lambda key: key.removesuffix("/acc")) -> dict[str, float]:
    """For each ``key`` of ``per_seed`` (one value per seed): ``key`` -> the mean, ``{prefix}/ci95`` -> the half-width
    of Student's t 95% interval (:func:`t_ci95`; absent with one seed) and ``{prefix}/seed{s}`` -> each value,
    ``prefix(key)`` being by default the key without a final ``/acc``."""
    out: dict[str, float] = {}
    for key, values in per_seed.items():
        mean, half = t_ci95(torch.tensor(values, dtype=torch.float64))
        p = prefix(key)
        out[key] = mean
        if len(values) > 1:
            out[f"{p}/ci95"] = half
        out.update({f"{p}/seed{s}": v for s, v in zip(seeds, values)})
    return out


__all__ = ["DIVERGENCE_FACTOR", "accuracy", "diverged", "mean_ci95", "seed_summary", "step_summary", "t_ci95"]
