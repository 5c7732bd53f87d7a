"""Figures for the book. Each function draws on a given (or new) matplotlib Axes and returns it.

Every figure is made for the book's text column: at most :data:`COLUMN_INCHES` wide (688 pixels at the
100-dpi inline backend, so it is shown at its natural size, not shrunk) with no text under :data:`MIN_FONT`
points. :func:`figure` makes such a figure; :func:`check_legible` raises where one is not.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.legend import Legend
from matplotlib.patches import Rectangle
from matplotlib.text import Text
from matplotlib.transforms import Bbox, ScaledTranslation
from torch import Tensor

COLORS = {"truth": "black", 0: "tab:green", 1: "tab:orange", 10: "tab:red", "support": "tab:purple"}
COLUMN_INCHES = 6.8  # the book's column is 688 px wide; matplotlib's inline backend draws 100 px an inch
MIN_FONT = 8.0  # points: 11 px at 100 dpi, the smallest text a reader of the column reads without zooming


def figure(nrows: int = 1, ncols: int = 1, height: float | None = None, width: float = COLUMN_INCHES,
           **kwargs) -> tuple[plt.Figure, Any]:
    """``plt.subplots`` sized for the book's column: ``width`` inches (at most the column), ``height`` inches
    (default 3.2 per row, capped at 8), constrained layout. Returns ``(fig, axes)`` as ``plt.subplots`` does."""
    if not 0 < width <= COLUMN_INCHES:
        raise ValueError(f"width must be in (0, {COLUMN_INCHES}] inches (the book's column), got {width!r}")
    height = min(3.2 * nrows, 8.0) if height is None else height
    kwargs.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def check_legible(fig: plt.Figure) -> plt.Figure:
    """Raise ``ValueError`` if ``fig`` is wider than the column, holds visible text under :data:`MIN_FONT`
    points (tick labels, legends, titles, annotations) or text that runs past its left or right edge (cut off,
    or widening the image the inline backend shows, which is then shrunk), or has a legend over the data of an
    axes (a line, marker, scatter point or bar inside the legend's box); return ``fig`` otherwise."""
    width = fig.get_figwidth()
    if width > COLUMN_INCHES + 1e-6:
        raise ValueError(f"figure is {width:.2f} in wide; the book's column takes at most {COLUMN_INCHES} in "
                         "(a wider one is shrunk, and its text with it)")
    fig.canvas.draw()  # tick labels exist only once drawn
    texts = _drawn_texts(fig)
    small = sorted({(round(t.get_fontsize(), 1), t.get_text()[:30]) for t in texts
                    if t.get_fontsize() < MIN_FONT - 1e-6})
    if small:
        raise ValueError(f"text under {MIN_FONT} pt at the column's width: {small[:5]}")
    renderer = _renderer(fig)
    extents = [(t, t.get_window_extent(renderer)) for t in texts]
    outside = sorted({t.get_text()[:30] for t, e in extents if e.x0 < fig.bbox.x0 - 1 or e.x1 > fig.bbox.x1 + 1})
    if outside:
        raise ValueError(f"text runs past the figure's left or right edge: {outside[:5]}")
    legends = [(ax, ax.get_legend()) for ax in fig.axes] + [(None, legend) for legend in fig.legends]
    for owner, legend in legends:
        if legend is None or not legend.get_visible():
            continue
        box = legend.get_window_extent(renderer)
        for ax in fig.axes if owner is None else [owner]:
            if _covers_data(ax, box, renderer):
                where = repr(ax.get_title()) if ax.get_title() else f"axes {fig.axes.index(ax)}"
                raise ValueError(f"a legend ({[t.get_text()[:20] for t in legend.get_texts()][:3]}) covers data "
                                 f"of {where}: place it outside the axes or in an empty corner")
    return fig


def _drawn_texts(fig: plt.Figure) -> list[Text]:
    """The texts ``fig`` shows: visible, not empty, not in a hidden axes or axis, and no label of a tick
    outside the axis' view (matplotlib keeps such ticks but does not draw them)."""
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not (ax.get_visible() and ax.axison and axis.get_visible()) \
                        or not low - 1e-9 * abs(high - low) <= tick.get_loc() <= high + 1e-9 * abs(high - low):
                    hidden |= {id(tick.label1), id(tick.label2)}
        if not ax.get_visible():
            hidden |= {id(t) for t in ax.findobj(Text)}
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden]


def _renderer(fig: plt.Figure):
    return fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else fig._get_renderer()


def _covers_data(ax: Axes, box, renderer) -> bool:
    """Whether the display-space ``box`` (a legend's) holds a point of a line (its segments sampled), a marker,
    a scatter point or a bar of ``ax``, within the axes' area. Bands and filled contours are not counted."""
    inner = Bbox.intersection(box, ax.bbox)
    if inner is None or inner.width < 1 or inner.height < 1:
        return False
    for line in ax.get_lines():
        if not line.get_visible():
            continue
        xy = line.get_transform().transform(line.get_xydata())
        if line.get_linestyle() not in ("None", "", " ", "none") and len(xy) > 1:
            t = np.linspace(0, 1, 16)[:, None, None]
            xy = (xy[:-1] * (1 - t) + xy[1:] * t).reshape(-1, 2)  # points along each drawn segment
        if inner.count_contains(xy[np.isfinite(xy).all(1)]):
            return True
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and coll.get_visible() and len(coll.get_offsets()):
            xy = coll.get_offset_transform().transform(np.asarray(coll.get_offsets(), dtype=float))
            if inner.count_contains(xy[np.isfinite(xy).all(1)]):
                return True
    return any(isinstance(p, Rectangle) and p.get_visible() and Bbox.intersection(p.get_window_extent(renderer),
                                                                                    inner) is not None
               for p in ax.patches)


def _room(ax: Axes) -> float:
    """Display units of width a title over ``ax`` or a legend under it may take: its share of the figure's
    width (its columns of the grid, less a margin), for the axes are narrower only by their tick labels."""
    spec = ax.get_subplotspec()
    share = 0.0 if spec is None else 0.95 * ax.figure.bbox.width * len(spec.colspan) / spec.get_gridspec().ncols
    return max(ax.bbox.width, share)


def _title(ax: Axes, title: str, fontsize: float | str | None = None) -> None:
    """``ax``'s title, broken over lines where one line would be wider than its room (a panel of several)."""
    text = ax.set_title(title, **({} if fontsize is None else {"fontsize": fontsize}))
    width, room = text.get_window_extent(_renderer(ax.figure)).width if title else 0.0, _room(ax)
    if width > room:  # as few lines as fit, of even lengths
        lines = math.ceil(width / room)
        for chars in range(math.ceil(len(title) / lines), len(title) + 1):
            wrapped = textwrap.wrap(title, chars, break_long_words=False, break_on_hyphens=False)
            if len(wrapped) <= lines:
                break
        text.set_text("\n".join(wrapped))


def _legend_below(ax: Axes, handles: Sequence | None = None, fontsize: float = 9.0, **kwargs) -> Legend | None:
    """A legend under ``ax``'s x-axis label, where it covers no data, in as many columns as fit its room
    (:func:`_room`; constrained layout makes room for it below)."""
    fig, renderer = ax.figure, _renderer(ax.figure)
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    else:
        labels = [h.get_label() for h in handles]
    if not handles:
        return None
    axis = ax.xaxis.get_tightbbox(renderer) if ax.xaxis.get_visible() else None
    below = (ax.bbox.y0 - axis.y0 if axis is not None else 0.0) / fig.dpi + 0.04  # inches under the axes
    anchor = ax.transAxes + ScaledTranslation(0, -max(below, 0.04), fig.dpi_scale_trans)
    for ncol in range(len(handles), 0, -1):
        legend = ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=anchor,
                           borderaxespad=0, ncol=ncol, fontsize=fontsize, frameon=False, columnspacing=1.2,
                           **kwargs)
        if legend.get_window_extent(renderer).width <= _room(ax):
            break
    return legend


def _axes(ax: Axes | None, figsize: tuple[float, float] = (5, 3.5)) -> Axes:
    return ax if ax is not None else figure(height=figsize[1], width=min(figsize[0], COLUMN_INCHES))[1]


def sinusoid_tasks(x: Tensor, y: Tensor, ax: Axes | None = None, title: str = "") -> Axes:
    """Points of several tasks, ``x, y`` of shape ``(tasks, points, 1)``, one colour per task."""
    ax = _axes(ax)
    for t in range(x.shape[0]):
        order = x[t, :, 0].argsort()
        ax.plot(x[t, order, 0].cpu(), y[t, order, 0].cpu(), ".-", lw=1, ms=3)
    ax.set(xlabel="x", ylabel="y")
    _title(ax, title)
    return ax


def adaptation_fit(grid: Tensor, truth: Tensor, predictions: Mapping[int, Tensor], support_x: Tensor,
                   support_y: Tensor, ax: Axes | None = None, title: str = "") -> Axes:
    """The MAML paper's Figure 2: ground truth, the K points, and the fit after 0, 1, ... steps."""
    ax = _axes(ax)
    ax.plot(grid.cpu(), truth.cpu(), color=COLORS["truth"], lw=2, label="ground truth")
    for steps, pred in predictions.items():
        label = "pre-update" if steps == 0 else f"{steps} grad step" + ("s" if steps > 1 else "")
        ax.plot(grid.cpu(), pred.cpu(), "--", color=COLORS.get(steps), label=label)
    ax.plot(support_x.cpu(), support_y.cpu(), "^", color=COLORS["support"], ms=8, label="points used for gradient")
    ax.set(xlabel="x", ylabel="y")
    _title(ax, title)
    _legend_below(ax)  # the curves fill the axes: no corner is empty
    return ax


def error_curves(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], ax: Axes | None = None,
                 title: str = "", ylabel: str = "query MSE", logy: bool = False,
                 ylim: tuple[float, float] | None = None) -> Axes:
    """Mean and 95% CI band against the number of adaptation steps, one line per method.

    A curve stops where its mean is missing (NaN: fine-tuning diverged on some tasks, :mod:`mapping.stats`).
    On a log axis a band whose lower edge is not positive is left out at that step rather than drawn down to
    the axis. ``ylim`` keeps the informative range in view.
    """
    ax = _axes(ax)
    for label, (mean, ci) in curves.items():
        mean, ci = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(ci, dtype=torch.float64)
        steps = torch.arange(len(mean))
        line, = ax.plot(steps, mean, marker="o", ms=3, label=label)
        low, high = mean - ci, mean + ci  # (steps + 1,)
        if logy:
            low, high = low.where(low > 0, torch.nan), high.where(low > 0, torch.nan)
        ax.fill_between(steps, low, high, alpha=0.15, color=line.get_color(), lw=0)
    ax.set(xlabel="adaptation steps", ylabel=ylabel)
    _title(ax, title)
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    _legend_below(ax)
    return ax


def smoothed(xs, ys, k: int) -> tuple[Tensor, Tensor]:
    """The moving average of ``ys`` over windows of ``k`` points (at most all of them), against the last ``x`` of
    each window: ``(xs', averages)``, ``len(ys) - k + 1`` points each."""
    xs, ys = torch.as_tensor(xs, dtype=torch.float64), torch.as_tensor(ys, dtype=torch.float64)
    k = max(1, min(k, len(ys)))
    return xs[k - 1:], torch.nn.functional.avg_pool1d(ys[None, None], k, stride=1)[0, 0]


def training_curve(histories: Mapping[str, Mapping], ax: Axes | None = None, smooth: int = 10,
                   title: str = "meta-training") -> Axes:
    """Training loss (moving average over ``smooth`` logged points) against iterations."""
    ax = _axes(ax)
    for label, history in histories.items():
        ax.plot(*smoothed([h["iteration"] for h in history["train"]], [h["loss"] for h in history["train"]],
                          smooth), label=label)
    ax.set(xlabel="iteration", ylabel="training loss", yscale="log")
    _title(ax, title)
    _legend_below(ax)
    return ax


def eval_curve(histories: Mapping[str, Mapping], key: str, ax: Axes | None = None, title: str = "",
               ylabel: str | None = None) -> Axes:
    """A periodic evaluation metric ``key`` of each history against iterations."""
    ax = _axes(ax)
    for label, history in histories.items():
        points = [(h["iteration"], h[key]) for h in history["eval"] if key in h]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", ms=3, label=label)
    ax.set(xlabel="iteration", ylabel=ylabel or key)
    _title(ax, title)
    _legend_below(ax)
    return ax


def decision_regions(xs: Tensor, ys: Tensor, prob: Tensor, source: tuple[Tensor, Tensor],
                     target: tuple[Tensor, Tensor], ax: Axes | None = None, title: str = "") -> Axes:
    """DANN's Figure 2 (Ganin et al. 2016): a classifier's regions (``prob`` of class 1 on the grid ``xs, ys``
    from :func:`mapping.experiments.moons.decision_grid`) over the labelled source ``(x (N, 2), y (N,))`` and the
    target ``(x, y)`` (its labels colour the points, for the reader; training never read them)."""
    ax = _axes(ax, (4.5, 4))
    ax.contourf(xs, ys, prob, levels=[0, 0.5, 1], colors=["#fde0c5", "#c6dbef"], alpha=0.8)
    ax.contour(xs, ys, prob, levels=[0.5], colors="k", linewidths=1.2)
    for (x, y), marker, name in ((source, "o", "source"), (target, "x", "target")):
        for c, colour in ((0, "tab:orange"), (1, "tab:blue")):
            keep = y == c
            ax.scatter(x[keep, 0], x[keep, 1], s=12, marker=marker, color=colour, lw=1,
                       label=f"{name}, class {c}", alpha=0.8 if marker == "o" else 1)
    ax.set(xticks=[], yticks=[], aspect="equal")
    _title(ax, title, "medium")  # a panel of two or three
    return ax


def domain_scatter(z_source: Tensor, z_target: Tensor, y_source: Tensor, y_target: Tensor, ax: Axes | None = None,
                   title: str = "") -> Axes:
    """2-D features (``(N, 2)`` each, e.g. PCA) of two domains: source as dots, target as crosses, coloured by
    class (10 classes)."""
    ax = _axes(ax, (4.5, 4))
    cmap = plt.get_cmap("tab10")
    ax.scatter(z_source[:, 0], z_source[:, 1], s=6, c=cmap(y_source.numpy() % 10), marker="o", alpha=0.6)
    ax.scatter(z_target[:, 0], z_target[:, 1], s=10, c=cmap(y_target.numpy() % 10), marker="x", lw=0.8)
    ax.set(xticks=[], yticks=[])
    _title(ax, title, "medium")  # a panel of two or three
    return ax


def domain_legend(fig, classes: int = 10) -> None:
    """One legend under ``fig`` for :func:`domain_scatter`: the two markers and the colour of each class."""
    from matplotlib.lines import Line2D
    cmap = plt.get_cmap("tab10")
    handles = [Line2D([], [], ls="", marker="o", color="grey", label="source (plain)"),
               Line2D([], [], ls="", marker="x", color="grey", label="target (shifted)")]
    handles += [Line2D([], [], ls="", marker="s", color=cmap(c % 10), label=str(c)) for c in range(classes)]
    renderer = _renderer(fig)
    for ncol in range(len(handles), 0, -1):  # as many columns as the figure's width holds (filled down first)
        legend = fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=9, handletextpad=0.2,
                            columnspacing=0.8)
        if ncol == 1 or legend.get_window_extent(renderer).width <= 0.95 * fig.bbox.width:
            break
        legend.remove()


def start_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float] | None]],
                 ax: Axes | None = None, title: str = "", ylabel: str = "test accuracy (%)",
                 style: str = "-") -> Axes:
    """``{label: (episodes, mean, ci95 or None)}``: accuracy against meta-training episodes, one line per start."""
    ax = _axes(ax)
    for i, (label, (x, mean, ci)) in enumerate(curves.items()):
        colour = plt.get_cmap("tab10")(i)
        ax.plot(x, mean, style, marker="o", ms=4, color=colour, label=label)
        if ci is not None:
            low = [m - c for m, c in zip(mean, ci)]
            high = [m + c for m, c in zip(mean, ci)]
            ax.fill_between(x, low, high, color=colour, alpha=0.15)
    ax.set(xlabel="meta-training episodes", ylabel=ylabel)
    _title(ax, title)
    return ax


def compiled_speedups(record: Mapping, ax: Axes | None = None) -> Axes:
    """Eager and compiled ms per step of each configuration of ``benchmarks/compiled_steps.py``'s ``record``, one
    pair of bars per configuration and thread count (log scale: the steps span three orders of magnitude)."""
    names, threads = record["config"]["configurations"], record["config"]["threads"]
    m = record["metrics"]
    ax = _axes(ax, figsize=(COLUMN_INCHES, 4.2))
    width = 0.8 / (2 * len(threads))
    cmap = plt.get_cmap("tab20")
    for j, t in enumerate(threads):
        for k, kind in enumerate(("eager", "compiled")):
            x = [i + (2 * j + k - len(threads) + 0.5) * width for i in range(len(names))]
            ms = [m[f"{name}/threads{t}/{kind}/ms_per_step"] for name in names]
            ax.bar(x, ms, width, color=cmap(2 * j + (1 - k)), label=f"{kind}, {t} thread{'s' * (t > 1)}")
    ax.set_xticks(range(len(names)), [n.replace("/", "\n") for n in names], fontsize=9)
    ax.set(yscale="log", ylabel="ms per step (log scale)")
    _title(ax, "eager and compiled meta-steps")
    _legend_below(ax)  # the bars fill the axes
    return ax


def memory_figure(record: Mapping) -> "plt.Figure":
    """Peak memory of second-order MAML from ``benchmarks/maml_memory.py``'s ``record``: against inner steps and
    against the task batch (one line per model, log scale: the models differ by orders of magnitude), and the
    options that bound it as (time, memory) relative to plain vmap at the fixed configuration: one marker per
    model and option, the colour naming the option, the shape the model."""
    from matplotlib.lines import Line2D
    m, models = record["metrics"], record["config"]["models"]
    # two rows at the book's column width, so that the labels stay legible: the two sweeps, then the options
    fig = plt.figure(figsize=(COLUMN_INCHES, 7.5), layout="constrained")
    axes = fig.subplot_mosaic([["steps", "tasks"], ["opts", "opts"]])
    by_steps, by_tasks, opts = axes["steps"], axes["tasks"], axes["opts"]
    markers, colours = dict(zip(models, "os^D")), {}
    for name, c in models.items():
        steps, tasks = list(c["step_sweep"]), list(c["task_sweep"])
        by_steps.plot(steps, [m[f"{name}/steps{s}/tasks{c['tasks']}/vmap/peak_mib"] for s in steps],
                      marker=markers[name], label=f"{name}, {c['tasks']} tasks")
        by_tasks.plot(tasks, [m[f"{name}/steps{c['steps']}/tasks{t}/vmap/peak_mib"] for t in tasks],
                      marker=markers[name], label=f"{name}, {c['steps']} steps")
        for label in c["options"]:
            k = f"{name}/steps{c['steps']}/tasks{c['tasks']}/{label}"
            x, y = (1.0, 1.0) if label == "vmap" else (m[f"{k}/ms_vs_vmap"], m[f"{k}/peak_vs_vmap"])
            colour = colours.setdefault(label, plt.get_cmap("tab10")(len(colours)))
            opts.scatter(x, y, marker=markers[name], color=colour, s=40, zorder=3)
    by_steps.set(xlabel="inner steps", ylabel="peak memory (MiB, log scale)", yscale="log")
    _title(by_steps, "second-order MAML, vmap: inner steps")
    by_tasks.set(xlabel="tasks per meta-batch (log scale)", ylabel="peak memory (MiB, log scale)", xscale="log",
                 yscale="log")
    _title(by_tasks, "task batch")
    ticks = sorted({t for c in models.values() for t in c["task_sweep"]})
    by_tasks.set_xticks(ticks, [str(t) for t in ticks], minor=False)
    by_tasks.minorticks_off()
    for ax in (by_steps, by_tasks):
        _legend_below(ax)
    opts.axhline(1, color="grey", ls=":", lw=1)
    opts.axvline(1, color="grey", ls=":", lw=1)
    opts.set(xlabel="time per meta-iteration / plain vmap", ylabel="peak memory / plain vmap", ylim=(0, None))
    _title(opts, "options that bound memory (fixed steps and tasks)")
    handles = [Line2D([], [], ls="", marker="s", color=colour, label=label.replace("_", " "))
               for label, colour in colours.items()]
    handles += [Line2D([], [], ls="", marker=marker, color="grey", label=f"{name}, {models[name]['tasks']} tasks, "
                       f"{models[name]['steps']} steps") for name, marker in markers.items()]
    _legend_below(opts, handles)  # beside it, it would narrow the column of the task-batch panel as well
    return fig
