"""What every experiment's run shares: where its checkpoint lives, keyed by what it trains.

An experiment is its configuration (a dataclass), its model builder, its training and its evaluation; a run
resumes from ``<checkpoint_dir>/<name>-<key>.pt``, ``key`` being 12 hex digits of the SHA-256 of the training
fields (JSON, sorted keys), so a change to a test setting reuses the training and a change to a training
setting starts afresh. :func:`over_seeds` runs one seed after another and gathers each metric's values for
:func:`mapping.stats.seed_summary`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from collections.abc import Callable, Iterable
from pathlib import Path


def config_key(fields: dict) -> str:
    """12 hex digits of the SHA-256 of ``fields`` as sorted-key JSON (the names stored checkpoints have)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def training_fields(config: object, leave_out: tuple[str, ...] = ()) -> dict:
    """The dataclass ``config``'s fields minus ``leave_out``, and minus ``amp`` when it is off (float32 runs keep
    the checkpoint names they had before the field existed)."""
    return {k: v for k, v in asdict(config).items() if k not in leave_out and (k != "amp" or v)}


def checkpoint_path(checkpoint_dir: str | Path | None, name: str, fields: dict) -> Path | None:
    """``<checkpoint_dir>/<name>-<config_key(fields)>.pt`` (``/`` in ``name`` becomes ``-``); None without a
    folder (the run keeps no checkpoint)."""
    if checkpoint_dir is None:
        return None
    return Path(checkpoint_dir) / f"{name.replace('/', '-')}-{config_key(fields)}.pt"


def over_seeds(seeds: Iterable[int], one_seed: Callable[[int], dict[str, float]]) -> dict[str, list[float]]:
    """``{metric: [its value for each seed]}`` from ``one_seed(seed) -> {metric: value}``, seeds in order (each
    run seeds itself from ``seed`` alone); :func:`mapping.stats.seed_summary` turns it into means and intervals."""
    per_seed: dict[str, list[float]] = {}
    for seed in seeds:
        for key, value in one_seed(seed).items():
            per_seed.setdefault(key, []).append(value)
    return per_seed


__all__ = ["checkpoint_path", "config_key", "over_seeds", "training_fields"]
