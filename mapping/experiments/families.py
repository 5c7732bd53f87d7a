"""The three families of meta-learning side by side on Omniglot's 1200/423 split (the book's chapter 2.1).

Everything comes from the stored records (``results/omniglot_metric.json``, ``omniglot_maml.json``,
``omniglot_mann.json``) and, for the adaptation cost, from a measurement on the reader's machine
(:func:`adaptation_ms`). The accuracies are not all of one kind, and the table says so: metric- and
optimization-based methods answer 5-way 1-shot episodes (one labelled drawing of each of 5 new characters, then
queries); the memory-augmented network is scored at the 2nd presentation of a character in a 5-way sequence,
after it has seen one labelled drawing of that character (Santoro et al. 2016, Table 1).
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..report import fmt
from ..results import setting_name
from ..timing import time_interleaved
from . import omniglot_maml, omniglot_metric
from .omniglot_maml import LABELS as MAML_LABELS
from .omniglot_mann import LABELS as MANN_LABELS, key as mann_key
from .omniglot_metric import LABELS as METRIC_LABELS

Record = Mapping[str, Any] | None
Table = tuple[list[str], list[list[Any]]]
HEADERS = ["family", "method", "accuracy (%)", "scored on", "meta-training (min)", "adaptation at test time"]


def _minutes(metrics: Mapping[str, float], key: str) -> str:
    """``metrics[key]`` seconds in whole minutes; "—" without metrics (no record), a ``KeyError`` without ``key``."""
    return f"{metrics[key] / 60:.0f}" if metrics else "—"


def accuracy_cell(metrics: Mapping[str, float], key: str) -> str:
    """``metrics[key]`` with the 95% interval stored beside it (``.../ci95``), one decimal; "—" without metrics
    (no record), a ``KeyError`` naming ``key`` where the metrics lack it."""
    if not metrics:
        return "—"
    return fmt(metrics[key], metrics[key.rsplit("/", 1)[0] + "/ci95"], 1)


_acc = accuracy_cell


def protocols(run: Mapping[str, Any]) -> list[tuple[str, tuple[str | None, ...]]]:
    """``(label, key parts)`` of each protocol a MAML-family run (a ``MamlConfig`` as a dict) was scored with: its
    ``test_query`` and, when it differs, its ``wide_query`` queries per class, each transductive and one query at a
    time; the key parts go after the setting in :func:`~mapping.experiments.omniglot_maml.key`
    (``key(method, "5w1s", *parts, "acc")``)."""
    out = []
    for q in dict.fromkeys((run["test_query"], run.get("wide_query", 0))):  # older records: no wide_query
        if q:
            part = None if q == run["test_query"] else f"q{q}"
            out += [(f"{q} per class, transductive", (part,)), (f"{q} per class, one at a time", (part, "per_query"))]
    return out


def _queries(q: int) -> str:
    return f"{q} query" if q == 1 else f"{q} queries"


def side_by_side(metric: Record, maml: Record, mann: Record) -> Table:
    """One row per stored method: family, method, accuracy, what it is scored on, training minutes, and what
    adapting to a new task takes. A missing record gives rows of dashes, saying which record is missing."""
    rows: list[list[Any]] = []
    m = metric["metrics"] if metric else {}
    for method in ("protonet", "matching", "siamese"):
        acc = omniglot_metric.key(method, "5w1s", "acc")
        mm = m if acc in m else {}  # optional by design: a record of some of the methods, dashes for the others
        rows.append(["metric-based", METRIC_LABELS[method], _acc(mm, acc),
                     "5-way 1-shot", _minutes(mm, omniglot_metric.key(method, "train_seconds")),
                     "one forward pass, no gradient"])
    m = maml["metrics"] if maml else {}
    runs = {r["method"]: r for r in maml["config"]["runs"]} if maml else {}
    for method, run in runs.items():
        key = functools.partial(omniglot_maml.key, method, setting_name(run["n_way"], run["k_shot"]))
        steps = f"{run['test_steps']} gradient steps" + (" on the head" if method == "anil" else "")
        rows.append(["optimization-based", MAML_LABELS[method], _acc(m, key("acc")),
                     f"{run['n_way']}-way {run['k_shot']}-shot, {_queries(run['test_query'])} per class, transductive",
                     _minutes(m, key("train_seconds")), steps])
        rows.append(["", f"{MAML_LABELS[method]}, one query at a time", _acc(m, key("per_query", "acc")),
                     "the same tasks, non-transductive", "", steps])
    if not runs:
        rows.append(["optimization-based", "(no stored omniglot_maml record)", "—", "", "—", ""])
    m = mann["metrics"] if mann else {}
    for model in mann["config"]["models"] if mann else []:
        rows.append(["model-based", MANN_LABELS[model], fmt(m[mann_key(model, "acc", 2)], None, 1),
                     "2nd presentation, 5-way sequence", _minutes(m, mann_key(model, "train_seconds")),
                     "one forward pass through the sequence, no gradient"])
    if mann is None:
        rows.append(["model-based", "(no stored omniglot_mann record)", "—", "", "—", ""])
    return HEADERS, rows


def adaptation_ms(fns: Mapping[str, Callable[[], object]], repeats: int = 5, block_s: float = 0.2) -> dict[str, float]:
    """Median milliseconds per call of each ``fns[name]()`` (adapting to and answering one task), measured side by
    side in this process (:func:`mapping.timing.time_interleaved`), without gradients kept."""
    with torch.no_grad():
        return time_interleaved(dict(fns), repeats, block_s)


__all__ = ["HEADERS", "accuracy_cell", "adaptation_ms", "protocols", "side_by_side"]
