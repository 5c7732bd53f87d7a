"""Small fake Omniglot zips in the official layout (Lake et al. 2015), for fast tests.

Images are 105x105 mode-'1' PNGs with True = white background, like the real ones: a few random
black strokes, or a known black square (``SQUARE``) for the ink convention test.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

SIZE = 105
SQUARE = (slice(30, 75), slice(30, 75))  # ink rows/columns of the known image
BACKGROUND = [("Gamma", 4), ("Alpha", 4), ("Beta", 4)]  # ids in this order: zip order != id order
EVALUATION = [("Delta", 4), ("Epsilon", 4), ("Zeta", 4)]


def png_bytes(ink: np.ndarray) -> bytes:
    """A mode-'1' PNG from a bool ``(105, 105)`` ink mask (ink black, background white)."""
    buffer = io.BytesIO()
    Image.fromarray(~ink).save(buffer, format="PNG")  # bool array -> mode '1', True = white
    return buffer.getvalue()


def random_ink(rng: np.random.Generator) -> np.ndarray:
    """A bool ``(105, 105)`` mask with a few random horizontal or vertical strokes."""
    ink = np.zeros((SIZE, SIZE), dtype=bool)
    for _ in range(rng.integers(3, 7)):
        r, c = rng.integers(5, 60, size=2)
        length, width = rng.integers(15, 40), rng.integers(2, 5)
        if rng.random() < 0.5:
            ink[r:r + width, c:c + length] = True
        else:
            ink[r:r + length, c:c + width] = True
    return ink


def square_ink() -> np.ndarray:
    ink = np.zeros((SIZE, SIZE), dtype=bool)
    ink[SQUARE] = True
    return ink


def set_entries(top: str, alphabets: list[tuple[str, int]], first_id: int = 1, seed: int = 0,
                drawers: int = 20) -> dict[str, bytes]:
    """``{member: png}`` for ``alphabets`` (name, characters); ids count up from ``first_id`` in list order.

    The image of character ``first_id``, drawer 01 is the known square.
    """
    rng = np.random.default_rng(seed)
    entries, cid = {}, first_id
    for alphabet, characters in alphabets:
        for c in range(1, characters + 1):
            for d in range(1, drawers + 1):
                ink = square_ink() if (cid, d) == (first_id, 1) else random_ink(rng)
                entries[f"{top}/{alphabet}/character{c:02d}/{cid:04d}_{d:02d}.png"] = png_bytes(ink)
            cid += 1
    return entries


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    """Write ``entries`` sorted, with directory entries, like the official zips."""
    folders = {name[:i + 1] for name in entries for i, ch in enumerate(name) if ch == "/"}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(folders | set(entries)):
            archive.writestr(name, b"" if name.endswith("/") else entries[name])
    return path


def make_set_zip(path: Path, top: str, alphabets: list[tuple[str, int]], first_id: int = 1, seed: int = 0,
                 mutate: Callable[[dict[str, bytes]], None] | None = None) -> Path:
    entries = set_entries(top, alphabets, first_id, seed)
    if mutate is not None:
        mutate(entries)
    return write_zip(path, entries)


def make_omniglot_root(root: Path) -> Path:
    """Fake background (3 alphabets x 4 characters, ids 1-12), evaluation (ids 13-24) and small1/small2."""
    root.mkdir(parents=True, exist_ok=True)
    make_set_zip(root / "images_background.zip", "images_background", BACKGROUND, 1, seed=1)
    make_set_zip(root / "images_evaluation.zip", "images_evaluation", EVALUATION, 13, seed=2)
    make_set_zip(root / "images_background_small1.zip", "images_background_small1", BACKGROUND[:2], 1, seed=1)
    make_set_zip(root / "images_background_small2.zip", "images_background_small2", BACKGROUND[1:], 5, seed=1)
    return root


def make_runs_zip(path: Path, runs: int = 2, ways: int = 5, seed: int = 0) -> np.ndarray:
    """A fake ``all_runs.zip``; test item ``i`` is an exact copy of training class ``labels[r, i]``.

    Returns ``labels (runs, ways)``, 0-based.
    """
    rng = np.random.default_rng(seed)
    entries, labels = {}, np.stack([rng.permutation(ways) for _ in range(runs)])
    for r in range(runs):
        pngs = [png_bytes(random_ink(rng)) for _ in range(ways)]
        lines = []
        for i in range(ways):
            entries[f"run{r + 1:02d}/training/class{i + 1:02d}.png"] = pngs[i]
            entries[f"run{r + 1:02d}/test/item{i + 1:02d}.png"] = pngs[labels[r, i]]
            lines.append(f"run{r + 1:02d}/test/item{i + 1:02d}.png run{r + 1:02d}/training/class{labels[r, i] + 1:02d}.png")
        entries[f"run{r + 1:02d}/class_labels.txt"] = ("\n".join(lines) + "\n").encode()
    write_zip(path, entries)
    return labels


def truncate(path: Path, fraction: float = 0.5) -> Path:
    """Cut ``path`` to ``fraction`` of its bytes, like an interrupted download."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# The official zips, where $MAPPING_DATA has them: tests marked requires_real run on the real data, else skip.
REAL = Path(os.environ.get("MAPPING_DATA", "/nonexistent")).expanduser() / "omniglot"
requires_real = pytest.mark.skipif(not (REAL / "images_background.zip").is_file(),
                                   reason="set MAPPING_DATA to a folder with omniglot/images_background.zip")
