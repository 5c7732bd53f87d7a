"""Results files with provenance: every number the book prints comes from one of these.

A results file is small JSON::

    {"name": "sinusoid", "command": "python -m mapping.reproduce sinusoid", "mode": "full",
     "seed": 0, "device": "...", "torch": "2.13.0", "python": "3.11.7", "commit": "abc123",
     "dirty": false, "date": "...", "wall_seconds": 1234.5, "config": {...},
     "metrics": {"maml/k5/step1/mse": 0.61, "maml/k5/step1/ci95": 0.05, ...}}

Metric keys are flat strings ``method/setting/.../name`` so later chapters can add their own.
"""
from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import os
import platform
import re
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .device import device_name

PROVENANCE_FIELDS = ("name", "command", "mode", "seed", "device", "torch", "python", "commit", "wall_seconds")


def results_dir() -> Path:
    """``$MAPPING_RESULTS`` if set, else the repository's ``results/`` next to the package."""
    env = os.environ.get("MAPPING_RESULTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "results"


def git_commit(root: Path | None = None) -> tuple[str, bool]:
    """The commit of the checkout holding the package and whether its tracked files differ from it.

    ``MAPPING_COMMIT`` overrides both (commit, not dirty): set it to the commit whose clean tree was copied
    where no usable ``.git`` travels with the files, e.g. a GPU machine that receives a copy of the working
    tree (``MAPPING_COMMIT=$(git rev-parse HEAD)`` on the machine that made the copy).
    """
    if os.environ.get("MAPPING_COMMIT"):
        return os.environ["MAPPING_COMMIT"], False
    root = root or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def provenance(name: str, *, command: str, mode: str, seed: int, device: torch.device | None = None) -> dict[str, Any]:
    """Everything needed to say where a number came from, except the metrics and the wall time."""
    commit, dirty = git_commit()
    return {
        "name": name,
        "command": command,
        "mode": mode,
        "seed": seed,
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": commit,
        "dirty": dirty,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write(record: dict[str, Any], out_dir: str | os.PathLike | None = None) -> Path:
    """Validate ``record`` and write ``<out_dir>/<name>.json`` atomically; return the path."""
    missing = [k for k in PROVENANCE_FIELDS + ("metrics",) if k not in record]
    if missing:
        raise ValueError(f"record is missing the provenance fields {missing}")
    metrics = record["metrics"]
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError("record['metrics'] must be a non-empty dict of 'a/b/c' -> number")
    for key, value in metrics.items():
        if not isinstance(key, str) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"metric {key!r} must map a string to a finite number, got {value!r}")
    out = Path(out_dir) if out_dir is not None else results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{record['name']}.json"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _missing(what: str, key: str, have: Iterable[str], path: Path | str) -> KeyError:
    """A ``KeyError`` naming the missing ``key``, the record's file and the closest keys it does have."""
    close = difflib.get_close_matches(key, list(have), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    return KeyError(f"{what} {key!r} is not in {path}{hint}")


class Metrics(dict):
    """A record's metrics (or those under one prefix, the prefix taken off): ``m[key]`` raises a ``KeyError``
    naming the key, the file and a close match instead of letting a renamed key print an em dash. ``get``
    stays a plain dict's, for the keys that are optional by design (e.g. ``.../diverged``)."""

    def __init__(self, values: Mapping[str, float], path: Path | str, prefix: str = ""):
        super().__init__(values)
        self.path, self.prefix = path, prefix

    def __getitem__(self, key: str) -> float:
        try:
            return super().__getitem__(key)
        except KeyError:
            raise _missing("metric", self.prefix + key, (self.prefix + k for k in self), self.path) from None

    def under(self, prefix: str) -> "Metrics":
        """The metrics whose key starts with ``prefix/``, the prefix taken off; ``KeyError`` if there are none."""
        head = prefix.strip("/") + "/"
        found = {k[len(head):]: v for k, v in self.items() if k.startswith(head)}
        if not found:
            raise _missing("metric prefix", self.prefix + head, (self.prefix + k for k in self), self.path)
        return Metrics(found, self.path, self.prefix + head)


class Record(dict):
    """A stored record (:func:`load`): the JSON object, whose missing fields and metrics fail loudly, naming
    the file (``record["config"]``, :meth:`metric`, :meth:`metrics`)."""

    def __init__(self, fields: Mapping[str, Any], path: Path | str):
        super().__init__(fields)
        self.path = path
        if isinstance(self.get("metrics"), Mapping):
            super().__setitem__("metrics", Metrics(self.get("metrics"), path))

    def __getitem__(self, key: str) -> Any:
        try:
            return super().__getitem__(key)
        except KeyError:
            raise _missing("field", key, self, self.path) from None

    def metric(self, key: str) -> float:
        """The metric ``key``; ``KeyError`` naming it and the file when the record does not have it."""
        return self["metrics"][key]

    def metrics(self, prefix: str = "") -> Metrics:
        """All metrics, or those under ``prefix`` with the prefix taken off (``KeyError`` if none)."""
        return self["metrics"].under(prefix) if prefix.strip("/") else self["metrics"]


def metric_key(*parts: object) -> str:
    """A structured metric key: the parts joined by ``/``, numbers as ``:g`` prints them
    (``metric_key("moons", 35.0, "dann", "acc") == "moons/35/dann/acc"``); ``None`` and ``""`` parts are left out,
    for a level that some keys of a family have and others not (``metric_key("siamese", "5w5s", None, "acc")``)."""
    return "/".join(f"{p:g}" if isinstance(p, float) else str(p) for p in parts if p is not None and p != "")


def combine_key(start: str, *rest: object) -> str:
    """``combine/{start}/...`` of :mod:`mapping.experiments.combine` (``combine_key(start, "5w1s", "ep0", "acc")``,
    ``combine_key(start, "pretrain_seconds")``): the experiment writes its keys with it, the pages read them with it."""
    return metric_key("combine", start, *rest)


def setting_name(n_way: int, k_shot: int) -> str:
    """A few-shot setting as metric keys name it: ``setting_name(5, 1) == "5w1s"``."""
    return f"{n_way}w{k_shot}s"


def setting_names(settings: Iterable[tuple[int, int]]) -> list[str]:
    """The few-shot settings as metric keys name them: ``[(5, 1), (20, 1)]`` -> ``["5w1s", "20w1s"]``."""
    return [setting_name(n, k) for n, k in settings]


def read(path: str | os.PathLike) -> Record:
    """The record stored at ``path`` (a ``.json`` file) as a :class:`Record`."""
    with open(path) as f:
        return Record(json.load(f), Path(path))


def load(name: str, out_dir: str | os.PathLike | None = None) -> Record | None:
    """Read ``<out_dir>/<name>.json`` as a :class:`Record`; ``None`` when no full run is stored (e.g. a pip
    install)."""
    path = (Path(out_dir) if out_dir is not None else results_dir()) / f"{name}.json"
    return read(path) if path.is_file() else None


def stored(name: str, out_dir: str | os.PathLike | None = None) -> Record:
    """:func:`load`, for a record that must be there: ``FileNotFoundError`` naming the file when it is not."""
    record = load(name, out_dir)
    if record is None:
        raise FileNotFoundError(f"no stored record {name!r} in {Path(out_dir) if out_dir else results_dir()}")
    return record


def portable(command: str) -> str:
    """``command`` with each absolute path shortened to ``…/<its last part>``: a caption names what ran, not the
    folders of the machine that ran it (``--out /tmp/runs2`` -> ``--out …/runs2``)."""
    return re.sub(r"(?<![\w.~])/(?:[^\s/'\"]+/)*([^\s/'\"]+)", r"…/\1", command)


def describe(record: dict[str, Any]) -> str:
    """One line of plain-text provenance for a figure or table caption, as the record has it (absolute paths in
    its command shortened by :func:`portable`)."""
    commit = record["commit"][:10] + (" with uncommitted changes" if record.get("dirty") else "")
    return (f"{portable(record['command'])} (mode {record['mode']}, seed {record['seed']}, {record['device']}, "
            f"torch {record['torch']}, commit {commit}, {record['wall_seconds'] / 60:.1f} min)")


def config_dict(config) -> dict[str, Any]:
    """Any dataclass config as a JSON-ready dict (tuples as lists), as results files record it."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
