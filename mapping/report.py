"""Tables for the book: a live run, the stored full run and the papers' numbers, side by side."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def fmt(mean: float | None, ci: float | None = None, digits: int = 2) -> str:
    """``0.38 ± 0.02``, or an em dash when there is no number."""
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {ci:.{digits}f}" if ci is not None else "")


def metric(metrics: Mapping[str, float] | None, key: str, digits: int = 2) -> str:
    """Format ``key`` (``.../mse``) with its ``.../ci95`` from a flat metrics dict; 'diverged' where recorded."""
    if not metrics:
        return "—"
    base = key.rsplit("/", 1)[0]
    if key not in metrics and f"{base}/diverged" in metrics:
        return f"diverged ({100 * metrics[f'{base}/diverged']:.1f}% of tasks)"
    return fmt(metrics.get(key), metrics.get(f"{base}/ci95"), digits)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub/MyST markdown table."""
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def steps_curve(metrics: Mapping[str, float], prefix: str, steps: int) -> tuple[list[float], list[float]]:
    """Mean and CI of ``{prefix}/step{s}/mse`` for s = 0..steps; NaN where the step diverged or is missing."""
    nan = float("nan")
    mean = [metrics.get(f"{prefix}/step{s}/mse", nan) for s in range(steps + 1)]
    ci = [metrics.get(f"{prefix}/step{s}/ci95", nan) for s in range(steps + 1)]
    return mean, ci
