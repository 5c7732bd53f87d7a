"""Where the official Omniglot files live, and how they get there.

Lake's zips (``images_background.zip``, ``images_evaluation.zip``, the two minimal background sets
and ``all_runs.zip``) are looked for under ``$MAPPING_DATA/omniglot`` (or a given ``root``). A missing
file is downloaded from Lake's repository only when allowed (``download=True`` or
``MAPPING_DOWNLOAD=1``); otherwise the error says where it looked, which files are needed and how to
get them. A download goes to a temporary file in the same folder, is checked against the official
md5 and only then moved into place atomically, so a failed or corrupt download leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import textwrap
import urllib.request
from pathlib import Path

from ..paths import data_root

_BASE = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
_SET_NAMES = ("background", "evaluation", "background_small1", "background_small2")  # keys of omniglot.SETS
URLS = {**{f"images_{s}.zip": _BASE + f"images_{s}.zip" for s in _SET_NAMES},
        "all_runs.zip": _BASE + "one-shot-classification/all_runs.zip"}
MD5 = {"images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",  # upstream, 9,464,212 bytes
       "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",  # upstream, 6,462,886 bytes
       "images_background_small1.zip": "e704a628b5459e08445c13499850abc4",
       "images_background_small2.zip": "b75a71a51d3b13f821f212756fe481fd",
       "all_runs.zip": "e8996daecdf12afeeb4a53a179f06b19"}
_NEEDED = ("images_background.zip, images_evaluation.zip (lake_split, vinyals_split); "
           "images_background_small1.zip, images_background_small2.zip (small_split); "
           "all_runs.zip (Lake's 20 one-shot runs)")


def omniglot_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``data_root()/"omniglot"`` (``$MAPPING_DATA/omniglot``)."""
    return Path(root).expanduser() if root is not None else data_root() / "omniglot"


def omniglot_file(name: str, root: str | os.PathLike | None = None, download: bool | None = None) -> Path:
    """The path of official file ``name``; downloads it if missing and allowed, else explains how to get it.

    ``download=None`` follows ``$MAPPING_DOWNLOAD`` (``1`` allows it).
    """
    folder = omniglot_root(root)
    path = folder / name
    if path.is_file():
        return path
    if download is None:
        download = os.environ.get("MAPPING_DOWNLOAD", "").strip().lower() in ("1", "true", "yes")
    if download:
        return _download(name, folder)
    where = "the root argument" if root is not None else (
        "$MAPPING_DATA/omniglot" if os.environ.get("MAPPING_DATA") else "the default data root; $MAPPING_DATA is not set")
    paragraphs = (f"Omniglot file {name} not found: looked for {path} (in {where}).",
                  f"Needed files: {_NEEDED}.",
                  f"To obtain it: set MAPPING_DATA to a folder that holds omniglot/{name}; or pass download=True "
                  f"(or set MAPPING_DOWNLOAD=1) to fetch {URLS.get(name, name)} into {folder}; "
                  f"or download it from that URL yourself into {folder}.")
    raise FileNotFoundError("\n".join(  # 79 columns, so that a notebook shows all of it; paths and URLs whole
        textwrap.fill(p, 79, break_long_words=False, break_on_hyphens=False) for p in paragraphs))


def _fetch(url: str, dest: Path) -> None:
    """Stream ``url`` into ``dest``. Module-level so that tests can replace it (no internet needed)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(name: str, folder: Path) -> Path:
    """Fetch ``name`` to a temporary file in ``folder``, check the official md5, then move it into place."""
    if name not in URLS:
        raise ValueError(f"no download URL for {name!r}; known files: {sorted(URLS)}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    except OSError as error:
        raise OSError(f"cannot download {name} into {folder} ({error}); pass root= a writable folder "
                      "or set MAPPING_DATA to one") from error
    os.close(fd)
    try:
        try:
            _fetch(URLS[name], Path(tmp))
        except OSError as error:
            raise OSError(f"could not download {URLS[name]} into {folder}: {error}") from error
        got = _md5(Path(tmp))
        if got != MD5[name]:
            raise ValueError(f"downloaded {URLS[name]} has md5 {got}, expected {MD5[name]}: the download is "
                             f"corrupt or the upstream file changed; nothing was saved in {folder}")
        os.replace(tmp, folder / name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return folder / name


__all__ = ["omniglot_file", "omniglot_root"]
