"""Work several pages repeat, done once and reused: results kept in ``$MAPPING_CACHE/memo``, keyed by the
work's name, its configuration and the source of the ``mapping`` package.

A page that pre-trains a network another page also pre-trains asks for it by the same name and configuration;
the first page of a build computes it, the others read it back. Any change of the package's code (a ``.py`` file
under ``mapping/``) changes every key, so a stored result never outlives the code that made it::

    state = memo.cached("omniglot-pretrain", {"epochs": 2, "seed": 0}, lambda: pretrain(...))

The value is stored with :func:`mapping.checkpoint.save` and read back weights-only: tensors, numbers, strings,
and lists, tuples and dicts of them. ``MAPPING_MEMO=0`` switches the store off (every call computes).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from . import checkpoint
from .paths import cache_dir

T = TypeVar("T")
PACKAGE = Path(__file__).resolve().parent


@functools.lru_cache(maxsize=4)
def code_hash(package: Path = PACKAGE) -> str:
    """SHA-256 over the relative path and bytes of every ``.py`` file under ``package``, in sorted order."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def key(name: str, config: Mapping[str, Any]) -> str:
    """The store's key for ``name`` and ``config`` under the package's current code: 20 hex digits."""
    if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"name must be a non-empty string of letters, digits, '-' and '_', got {name!r}")
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping of JSON values, got {type(config).__name__}")
    try:
        text = json.dumps(dict(config), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"config must hold JSON values only (numbers, strings, lists, dicts): {error}") from None
    return hashlib.sha256(f"{name}\0{text}\0{code_hash()}".encode()).hexdigest()[:20]


def path(name: str, config: Mapping[str, Any]) -> Path:
    """Where :func:`cached` keeps ``name`` under ``config``."""
    return cache_dir("memo") / f"{name}-{key(name, config)}.pt"


def cached(name: str, config: Mapping[str, Any], compute: Callable[[], T]) -> T:
    """``compute()``, stored under ``name`` and ``config`` the first time and read back afterwards.

    A store that cannot be read (a truncated or foreign file) is computed and written again.
    """
    file = path(name, config)
    if os.environ.get("MAPPING_MEMO", "1") != "0" and file.is_file():
        try:
            return checkpoint.load(file)
        except ValueError:
            pass
    value = compute()
    if os.environ.get("MAPPING_MEMO", "1") != "0":
        checkpoint.save(value, file)
    return value
