"""Chapter 2.1's tables, built from the stored records in ``results/`` and, optionally, the page's live run.

Nothing here reads Omniglot: every function takes what :func:`mapping.results.load` returns (or the sweep's
JSON lines) and the live run's metrics only when given, so the sections of the page that need only
``results/*.json`` never depend on the data. A stored record is shaped like ::

    {"command": "...", "mode": "full", ..., "config": {"runs": [{"method": "protonet", "split": "vinyals",
     "train_way": 60, "train_shot": 1, "episodes": 5000, ...}, ...]},
     "metrics": {"protonet/5w1s/acc": 98.24, "protonet/5w1s/ci95": 0.23, "siamese/5w5s/mean/acc": 98.4,
                 "protonet/lake20/error": 8.5, "protonet/train_seconds": 2739.2, ...}}

Table functions return ``(headers, rows)`` for :func:`mapping.report.markdown_table`; the caveats the page
states (training shot, Siamese paper source, Koch et al.'s split) are written into the cells they qualify.
"""
from __future__ import annotations

import inspect
import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import budget, results
from ..data.omniglot import SOURCE_SIZE, load_omniglot
from ..report import fmt
from ..results import setting_name
from . import omniglot_metric
from .omniglot_metric import METHODS, PAPER, SETTINGS

__all__ = ["LAKE_2015", "LAKE_CAVEATS", "LAKE_SOURCE", "PAPER_SOURCE", "SHORT", "SWEEP_FILE", "lake_table",
           "load_sweep", "paper_sources", "paper_table", "provenance", "run_name", "siamese_table", "sweep_curve",
           "sweep_table", "sweep_value", "trained_shots"]

Table = tuple[list[str], list[list[Any]]]  # (headers, rows) for mapping.report.markdown_table
Record = Mapping[str, Any]  # a stored results record, as mapping.results.load returns it

# Where each method's row of PAPER comes from: the paper and its table. Koch et al. report nothing on this kind
# of split; the Siamese figures are those the MAML paper's Omniglot table gives for their method (at 20-way
# 1-shot Vinyals et al.'s Table 1 gives 88.0, or 88.1 fine-tuned, for their re-implementation; the MAML
# paper's 88.2 is the one REFERENCE.md records, so that is the one cited, to its table).
PAPER_SOURCE = {"protonet": "Snell et al. 2017, Table 1",
                "matching": "Vinyals et al. 2016, Table 1",
                "siamese": "Koch et al.'s method as quoted in Finn et al. 2017, Table 1"}
SHORT = {"protonet": "ProtoNet", "matching": "Matching Net", "siamese": "Siamese Net"}  # narrow table cells

# Lake, Salakhutdinov & Tenenbaum 2015 (Science 350:1332), one-shot classification error (%) on their 20
# within-alphabet runs of 20-way one-shot classification.
LAKE_SOURCE = "Lake et al. 2015"
LAKE_2015 = (("people", 4.5), ("Bayesian Program Learning", 3.3), ("Siamese convnet", 8.0),
             ("simple convnet", 13.5), ("modified Hausdorff distance", 38.8))
_SOURCE_PX = "x".join(map(str, SOURCE_SIZE))  # Omniglot's own drawings, 105x105
LAKE_CAVEATS = {"Siamese convnet": f"Koch et al.: trained on another split, with affine distortions, "
                                   f"{_SOURCE_PX} images"}
# The stored ProtoNet rows of Lake's table: metric key -> row label (before the image size).
_LAKE_RUNS = ((omniglot_metric.key("protonet", "lake20", "error"), "ProtoNet, background set"),
              (omniglot_metric.key(omniglot_metric.run_name("protonet", "minimal"), "lake20", "error"), "ProtoNet, minimal background set (small1)"))

SWEEP_FILE = "omniglot_metric_sweep_h200.jsonl"  # benchmarks/omniglot_metric_sweep.py on one H200


def _image_px() -> str:
    """``28x28``: the size the runs train on, ``load_omniglot``'s default (``load_split`` never sets one)."""
    size = inspect.signature(load_omniglot).parameters["size"].default
    return f"{size}x{size}"


def _acc(metrics: Mapping[str, float] | None, key: str) -> str:
    """``98.2 ± 0.2`` for ``key + "/acc"`` with its ``/ci95``; an em dash when absent."""
    metrics = metrics or {}
    return fmt(metrics.get(key + "/acc"), metrics.get(key + "/ci95"), 1)


def _gap(metrics: Mapping[str, float] | None, key: str, paper: float) -> str:
    """Run minus paper, in points; an em dash when the run has no such number."""
    value = (metrics or {}).get(key + "/acc")
    return fmt(None if value is None else value - paper, digits=1)


def _trained(k: int, shots: Mapping[str, int | None]) -> str:
    """``", 1-shot-trained model"`` where a run's training shot differs from the test shot ``k``.

    ``shots`` maps a run ("stored run", "live run") to its training shot, None when there is no such run;
    runs are named only when they disagree.
    """
    known = {who: s for who, s in shots.items() if s is not None}
    other = {who: s for who, s in known.items() if s != k}
    if not other:
        return ""
    if len(set(known.values())) == 1:
        return f", {next(iter(other.values()))}-shot-trained model"
    return "".join(f", {s}-shot-trained model ({who})" for who, s in other.items())


def run_name(run: Mapping[str, Any]) -> str:
    """A stored run's metric prefix: ``protonet`` on the id-order split, else ``protonet/background``."""
    return omniglot_metric.run_name(run["method"], run["split"])


def trained_shots(record: Record | None) -> dict[str, int]:
    """``{run name: training shot}`` from the record's ``config["runs"]``; empty without a record."""
    return {run_name(run): run["train_shot"] for run in (record or {}).get("config", {}).get("runs", [])}


def load_sweep(path: str | Path | None = None) -> list[dict]:
    """The sweep's JSON lines (``results/`` + :data:`SWEEP_FILE` by default); ``[]`` when not stored."""
    path = Path(path) if path is not None else results.results_dir() / SWEEP_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def sweep_table(records: Sequence[Mapping[str, Any]], split: str = "vinyals") -> Table:
    """One row per finished configuration of ``split``: for ``"vinyals"`` its accuracies (%) on the id-order
    split, one column per test setting; for ``"background"`` its error (%) on Lake's 20 runs. Two narrow tables
    rather than one wide one: the book's column holds about seven short columns."""
    if split not in ("vinyals", "background"):
        raise ValueError(f"split must be 'vinyals' or 'background', got {split!r}")
    scores = [f"{n}w{k}s" for n, k in SETTINGS] if split == "vinyals" else ["Lake's 20 runs, error (%)"]
    headers = ["method, training episodes", "episodes", "lr halved every"] + scores
    rows = []
    for r in records:
        c = r["config"]
        if c["split"] != split:
            continue
        if split == "vinyals" and "final" in r:  # the last line of each id-order configuration
            m = r["final"]
            cells = [fmt(m.get(f"{c['method']}/{n}w{k}s/acc"), digits=1) for n, k in SETTINGS]
        elif split == "background" and r["episode"] == c["episodes"]:  # a background-set run's last evaluation
            cells = [fmt(r.get("lake20"), digits=1)]
        else:
            continue
        extra = f", scale {c['matching_scale']:g}" if c["method"] == "matching" else ""
        rows.append([f"{SHORT[c['method']]}, {c['train_way']}-way {c['train_shot']}-shot{extra}", c["episodes"],
                     c["halve_every"]] + cells)
    return headers, rows


def sweep_curve(records: Sequence[Mapping[str, Any]], name: str, setting: str = "20w1s",
                ) -> tuple[list[int], list[float], dict] | None:
    """Episodes and test accuracies (%) of configuration ``name`` along its run, and its config; None if absent."""
    points = [r for r in records if r["name"] == name and setting in r]
    if not points:
        return None
    return [r["episode"] for r in points], [r[setting] for r in points], points[0]["config"]


def sweep_value(records: Sequence[Mapping[str, Any]], name: str, episode: float, setting: str = "20w1s") -> float:
    """Configuration ``name``'s test accuracy (%) in ``setting`` after ``episode`` training episodes, read off its
    curve by linear interpolation (``setting="lake20"``: its error on Lake's runs); for comparing configurations
    at equal episodes or at equal cost. Raises ``ValueError`` outside the curve's range of episodes."""
    points = sorted((r["episode"], r[setting]) for r in records if r["name"] == name and r.get(setting) is not None)
    if not points or not points[0][0] <= episode <= points[-1][0]:
        span = f"{points[0][0]}-{points[-1][0]}" if points else "none"
        raise ValueError(f"episode={episode} is outside {name!r}'s {setting} curve (episodes {span})")
    for (e0, v0), (e1, v1) in zip(points, points[1:]):
        if e0 <= episode <= e1:
            return v0 if e1 == e0 else v0 + (v1 - v0) * (episode - e0) / (e1 - e0)
    return points[0][1]  # a single point


def paper_table(stored: Record | None, live: Mapping[str, float] | None = None,
                configs: Mapping[str, Any] | None = None, mode: str | None = None) -> Table:
    """The papers' accuracies (:data:`PAPER`), the stored full run and, when given, the page's live run.

    ``live`` holds the live run's ``"{method}/{n}w{k}s/acc"`` metrics and ``configs`` its ``MetricConfig``s by
    method (for its training shots and the column's budget); without ``live`` there is no live column. Rows are
    labelled by :data:`SHORT`; :func:`paper_sources` names the paper and table of each method's figures. The
    training shots of the stored run come from ``stored["config"]["runs"]``. The gap is stored run - paper;
    rows for Siamese networks' ``reduce="mean"`` rule appear where either run has them.
    """
    full = stored["metrics"] if stored else {}
    stored_shots = trained_shots(stored)
    live_header = []
    if live is not None:
        c = (configs or {}).get("protonet")
        live_header = ["live" + (f" ({mode or budget.mode()}: {c.episodes} episodes, "
                                 f"{c.test_episodes} test episodes)" if c is not None else "")]
    headers = ["method", "setting", "paper"] + live_header + ["stored full run", "full run - paper"]
    rows = []
    for method in METHODS:
        label = SHORT[method]  # the paper column's sources: paper_sources()
        live_config = (configs or {}).get(method) if live is not None else None
        shots = {"stored run": stored_shots.get(method),
                 "live run": getattr(live_config, "train_shot", None)}
        for (n, k), paper in zip(SETTINGS, PAPER[method]):
            setting = f"{n}-way {k}-shot" + _trained(k, shots)
            for rule in (None, "mean"):  # the model's own rule; Siamese networks' mean rule where stored
                key = omniglot_metric.key(method, setting_name(n, k), rule)
                if rule and key + "/acc" not in {**full, **(live or {})}:
                    continue
                rows.append([label, setting + (", mean rule" if rule else ""), fmt(paper, digits=1)]
                            + ([_acc(live, key)] if live is not None else [])
                            + [_acc(full, key), _gap(full, key, paper)])
    return headers, rows


def paper_sources() -> str:
    """Markdown: the paper and table each row of :func:`paper_table`'s "paper" column comes from."""
    return "Paper column: " + "; ".join(f"{SHORT[m]}, {PAPER_SOURCE[m]}" for m in METHODS) + "."


def siamese_table(record: Record) -> Table:
    """The longer Siamese run against the paper's figures for Koch et al.'s method (:data:`PAPER_SOURCE`),
    max and mean rules."""
    m = record["metrics"]
    shots = {"stored run": trained_shots(record).get("siamese")}
    rows = []
    for (n, k), paper in zip(SETTINGS, PAPER["siamese"]):
        for rule in (None, "mean"):
            key = omniglot_metric.key("siamese", setting_name(n, k), rule)
            if key + "/acc" in m:
                rows.append([f"{n}-way {k}-shot" + _trained(k, shots) + (", mean rule" if rule else ""),
                             fmt(paper, digits=1), _acc(m, key), _gap(m, key, paper)])
    headers = ["setting", "paper (Finn et al. 2017, Table 1)",
               f"{int(m[omniglot_metric.key('siamese', 'episodes')])} episodes", "run - paper"]
    return headers, rows


def lake_table(stored: Record | None = None, live_error: float | None = None,
               live_source: str = "this page's live run") -> Table:
    """Lake et al.'s published errors (:data:`LAKE_2015`, with :data:`LAKE_CAVEATS` in the row labels), the
    page's live ProtoNet when ``live_error`` is given, and the stored full run's ProtoNets where stored."""
    px = _image_px()
    rows = [[name + (f" ({LAKE_CAVEATS[name]})" if name in LAKE_CAVEATS else ""), fmt(err, digits=1),
             LAKE_SOURCE] for name, err in LAKE_2015]
    if live_error is not None:
        rows.append([f"ProtoNet, background set, {px} images", fmt(live_error, digits=1), live_source])
    full = stored["metrics"] if stored else {}
    rows += [[f"{label}, {px} images", fmt(full[key], digits=1), "stored full run"]
             for key, label in _LAKE_RUNS if key in full]
    return ["model", "error (%)", "source"], rows


def provenance(record: Record | None, label: str = "stored full run", per_run: bool = True,
               width: int = 79) -> str:
    """``"{label}: <command, mode, seed, device, commit, time>"`` wrapped to ``width``, then each stored run's
    episodes and training time (``per_run``) or the total training time; ``none in this checkout`` without
    a record."""
    if record is None:
        return f"{label}: none in this checkout"
    lines = [textwrap.fill(f"{label}: {results.describe(record)}", width=width, break_long_words=False,
                           break_on_hyphens=False)]
    m = record["metrics"]
    runs = record.get("config", {}).get("runs", [])
    if not per_run:
        seconds = sum(m[omniglot_metric.key(run_name(run), "train_seconds")] for run in runs)
        return "\n".join(lines + [f"  {seconds / 60:.1f} min of training"])
    for run in runs:
        name = run_name(run)
        seconds = m[omniglot_metric.key(name, "train_seconds")]
        lines += [f"  {name}: {run['train_way']}-way {run['train_shot']}-shot, {run['episodes']} episodes,",
                  f"    {seconds / 60:.1f} min of training ({seconds / run['episodes']:.2f} s per episode)"]
    return "\n".join(lines)
