"""Tables for the book: a live run, the stored full run and the papers' numbers, side by side."""
from __future__ import annotations

import functools
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any


def fmt(mean: float | None, ci: float | None = None, digits: int = 2) -> str:
    """``0.38 ± 0.02``, or an em dash when there is no number."""
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" + (f" ± {ci:.{digits}f}" if ci is not None else "")


def metric(metrics: Mapping[str, float] | None, key: str, digits: int = 2) -> str:
    """Format ``key`` (``.../mse``) with its ``.../ci95`` from a flat metrics dict: an em dash only where there
    are no metrics at all; a ``KeyError`` where ``key`` is missing from them (naming the record's file for a
    :class:`mapping.results.Metrics`), never a silent dash for a renamed key.

    Where fine-tuning diverged on some tasks (:mod:`mapping.stats`): the median and quartiles of the other
    tasks and the diverged share, e.g. ``median 0.41 (IQR 0.21–0.80); 0.3% diverged``; never a mean.
    """
    if not metrics:
        return "—"
    base = key.rsplit("/", 1)[0]
    share = metrics.get(f"{base}/diverged", 0.0)
    if share > 0:
        if f"{base}/median" not in metrics:  # every task diverged, or a record older than the quartiles
            return f"diverged ({100 * share:.1f}% of tasks)"
        q = [f"{metrics[f'{base}/{s}']:.{digits}f}" for s in ("median", "q25", "q75")]
        return f"median {q[0]} (IQR {q[1]}–{q[2]}); {100 * share:.1f}% diverged"
    return fmt(metrics[key], metrics.get(f"{base}/ci95"), digits)


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


def divergence_onset(metrics: Mapping[str, float], prefix: str, steps: int) -> tuple[int, float] | None:
    """The first step ``s`` at which fine-tuning diverged on some tasks, and the share then; None if never."""
    for s in range(steps + 1):
        share = metrics.get(f"{prefix}/step{s}/diverged", 0.0)
        if share > 0:
            return s, share
    return None


def curve_label(label: str, metrics: Mapping[str, float], prefix: str, steps: int) -> str:
    """``label``, with where its curve stops: ``"ANIL (diverged on 1.2% of tasks at step 4)"``."""
    onset = divergence_onset(metrics, prefix, steps)
    return label if onset is None else f"{label} (diverged on {100 * onset[1]:.1f}% of tasks at step {onset[0]})"


def timings(metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    """``{name: ms}`` from a benchmark's ``{prefix}/{name}/ms_per_iter`` entries (``{name}/ms_per_iter`` without a
    prefix): the implementations or executions timed under one heading of a record."""
    head = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    out = {}
    for key, value in metrics.items():
        if key.startswith(head) and key.endswith("/ms_per_iter"):
            name = key[len(head):-len("/ms_per_iter")]
            if name and "/" not in name:
                out[name] = value
    return out


def stopped_curve(metrics: Mapping[str, float], prefix: str, steps: int) -> tuple[list[float], list[float]]:
    """:func:`steps_curve`, stopped at the first step where fine-tuning diverged on some tasks
    (:func:`divergence_onset`): NaN from that step on, even where no task is counted diverged at a later step
    (a task's loss can fall back under the threshold), so that a curve never comes back after it stopped."""
    mean, ci = steps_curve(metrics, prefix, steps)
    onset = divergence_onset(metrics, prefix, steps)
    if onset is not None:
        nan = float("nan")
        mean = mean[:onset[0]] + [nan] * (steps + 1 - onset[0])
        ci = ci[:onset[0]] + [nan] * (steps + 1 - onset[0])
    return mean, ci


def caption(record: Mapping[str, Any], label: str = "stored run", width: int = 79) -> str:
    """``label: `` and the record's provenance (:func:`mapping.results.describe`), wrapped to ``width``."""
    from .results import describe
    return textwrap.fill(f"{label}: {describe(record)}", width, subsequent_indent="  ")


def implementations_table(benches: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """One row per implementation timed in each ``(where, record)`` of ``benches`` (``benchmark_maml_sinusoid``
    and its ``_cuda`` twin): ms per meta-iteration and the time relative to the compiled one (the eager
    ``mapping`` one where nothing was compiled)."""
    rows = []
    for on, bench in benches:
        m = bench["metrics"]
        ref = m["compiled/ms_per_iter"] if "compiled/ms_per_iter" in m else m["mapping/ms_per_iter"]
        rows += [[on, impl, f"{m[f'{impl}/ms_per_iter']:.2f}", f"{m[f'{impl}/ms_per_iter'] / ref:.1f}x"]
                 for impl in ("mapping", "compiled", "loop", "higher") if f"{impl}/ms_per_iter" in m]
    return markdown_table(["on", "implementation", "ms per meta-iteration", "time relative to the fastest"], rows)


def compiled_step_key(name: str, threads: int, *rest: str) -> str:
    """``{name}/threads{threads}/...`` of ``results/benchmark_compiled_steps.json``
    (``compiled_step_key("sinusoid/maml", 1, "eager", "ms_per_step")``)."""
    return "/".join((name, f"threads{threads}") + rest)


def compiled_steps_table(record: Mapping[str, Any]) -> str:
    """Eager and compiled ms per step, the speed-up and the compile time of each configuration and thread count
    of a ``benchmark_compiled_steps`` record."""
    m, cfg = record["metrics"], record["config"]
    rows = []
    for name in cfg["configurations"]:
        for t in cfg["threads"]:
            k = functools.partial(compiled_step_key, name, t)
            rows.append([name, t, f"{m[k('eager', 'ms_per_step')]:.2f}", f"{m[k('compiled', 'ms_per_step')]:.2f}",
                         f"{m[k('speedup')]:.1f}x", f"{m[k('compile_seconds')]:.0f}"])
    return markdown_table(["step", "threads", "eager ms", "compiled ms", "speed-up", "compile s"], rows)


def memory_table(record: Mapping[str, Any]) -> str:
    """Peak memory of each model and option of a ``benchmark_maml_memory`` record, and memory and time relative
    to ``vmap`` (which is 1.00x against itself: the record stores no ratio for it)."""
    m, rows = record["metrics"], []
    for model, c in record["config"]["models"].items():
        for option in c["options"]:
            key = f"{model}/steps{c['steps']}/tasks{c['tasks']}/{option}"
            ratio = {r: m[f"{key}/{r}"] if option != "vmap" else 1.0 for r in ("peak_vs_vmap", "ms_vs_vmap")}
            rows.append([f"{model}, {c['steps']} st., {c['tasks']} t.", option, f"{m[key + '/peak_mib']:.0f}",
                         f"{ratio['peak_vs_vmap']:.2f}x", f"{ratio['ms_vs_vmap']:.2f}x"])
    return markdown_table(["model, steps, tasks", "option", "MiB", "memory", "time"], rows)


def page_key(page: str, field: str) -> str:
    """``page/{page}/{field}``: a page's numbers in ``benchmarks/book_build.py``'s record."""
    return f"page/{page}/{field}"


def book_pages(record: Mapping[str, Any]) -> list[str]:
    """The pages a stored book build timed (``book/ch2/transfer``, ...), slowest first."""
    m = record["metrics"]
    return sorted({k.split("/", 1)[1].rsplit("/", 1)[0] for k in m if k.startswith("page/")},
                  key=lambda p: -m[page_key(p, "wall_seconds")])


def book_pages_table(record: Mapping[str, Any]) -> str:
    """Chapter 7.7's table of a stored book build: each page (slowest first) with its wall and CPU seconds and
    peak MiB (a dash where the build did not time a field: pages read from the build log have wall seconds
    only)."""
    m, pages = record["metrics"], book_pages(record)
    cell = lambda p, f: f"{m[page_key(p, f)]:.0f}" if page_key(p, f) in m else "—"  # noqa: E731
    return markdown_table(["page", "wall s", "CPU s", "peak MiB"],
                          [[p.removeprefix("book/"), *(cell(p, f) for f in ("wall_seconds", "cpu_seconds",
                                                                             "peak_mib"))] for p in pages])


def threads_key(load: int, model: str, setting: str) -> str:
    """``busy{load}/{model}/{setting}/ms_per_step``: ``benchmarks/threads_under_load.py``'s keys."""
    return f"busy{load}/{model}/{setting}/ms_per_step"


def threads_table(record: Mapping[str, Any]) -> str:
    """Chapter 7.7's table of a ``benchmark_threads_load`` record: per thread setting, the Conv-4 and MAML steps'
    ms quiet and with the record's busy processes."""
    busy = record["config"]["busy"]
    ms = lambda load, model, c: record["metrics"][threads_key(load, model, c)]  # noqa: E731
    return markdown_table(["threads", "Conv-4, quiet", f"Conv-4, {busy} busy", "MAML, quiet", f"MAML, {busy} busy"],
                          [[c] + [f"{ms(load, model, c):.1f}" for model in ("conv4", "maml") for load in (0, busy)]
                           for c in record["config"]["configs"]])


__all__ = ["book_pages", "book_pages_table", "caption", "compiled_step_key", "compiled_steps_table", "curve_label",
           "divergence_onset", "fmt", "implementations_table", "markdown_table", "memory_table", "metric", "page_key",
           "steps_curve", "stopped_curve", "threads_key", "threads_table", "timings"]
