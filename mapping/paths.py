"""Where data and caches live. ``MAPPING_DATA`` is read-only input; ``MAPPING_CACHE`` takes what we write."""
from __future__ import annotations

import os
from pathlib import Path


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mapping"


def data_root() -> Path:
    """``$MAPPING_DATA``, else ``<user cache>/mapping/data``: where datasets are read (and downloaded to)."""
    env = os.environ.get("MAPPING_DATA")
    return Path(env).expanduser() if env else _user_cache() / "data"


def cache_dir(*parts: str) -> Path:
    """``$MAPPING_CACHE``, else ``<user cache>/mapping/cache``, joined with ``parts`` and created."""
    env = os.environ.get("MAPPING_CACHE")
    path = (Path(env).expanduser() if env else _user_cache() / "cache").joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
