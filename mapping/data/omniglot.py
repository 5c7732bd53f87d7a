"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015, Science): 1623 handwritten characters x 20 drawers.

Reads Lake's official zips (``images_background.zip`` etc., layout
``images_background/<Alphabet>/characterNN/<id>_<dd>.png``) straight from the archive, never
extracting, and turns each set into a tensor ``(characters, 20, 28, 28)`` ordered by character id.

Preprocessing (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017): 105x105 -> 28x28, ink = 1.0,
background = 0.0, float32 in [0, 1]. The PNGs are mode ``'1'`` (True = white). PIL silently resizes
mode ``'1'`` images with NEAREST whatever filter is asked for, so the MAML and ProtoNets scripts in
fact used nearest-neighbour binary images; we convert to 8-bit grey first so that the filter applies.
Default ``resample="lanczos"``: the filter MAML names, a proper antialiased downsample (factor 3.75)
that keeps 2-3 pixel strokes connected and sharper than BILINEAR; it costs only at the first load,
since results are cached. ``resample="nearest"`` reproduces the binary images of those scripts.

Splits: Lake's background/evaluation (:func:`lake_split`), its minimal background sets
(:func:`small_split`), and the 1200/423 character split with rotations of Santoro et al. 2016 and
Vinyals et al. 2016 (:func:`vinyals_split`, :func:`rotate`). Finding and downloading the zips is
:mod:`mapping.data.files`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .. import checkpoint
from ..paths import cache_dir
from .episodes import EpisodeSampler
from .files import MD5, URLS, omniglot_file, omniglot_root  # noqa: F401  (re-exported for older imports)

DRAWERS = 20
SOURCE_SIZE = (105, 105)
SETS = {"background": (30, 964), "evaluation": (20, 659),  # set -> (alphabets, characters)
        "background_small1": (5, 136), "background_small2": (5, 156)}
RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST}
_CACHE_VERSION = 1


@dataclass(frozen=True)
class OmniglotSplit:
    """Classes of Omniglot images with their metadata; ``images`` feeds :class:`EpisodeSampler`."""

    images: Tensor  # (classes, 20, 28, 28) float32, ink = 1
    character_ids: Tensor  # (classes,) int64, Omniglot's global id 1..1623
    alphabet_index: Tensor  # (classes,) int64, index into ``alphabets``
    rotation: Tensor  # (classes,) int64, degrees counter-clockwise (0 unless rotated)
    alphabets: tuple[str, ...]
    names: tuple[tuple[str, str], ...]  # (alphabet, characterNN) of each class

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        for name in ("character_ids", "alphabet_index", "rotation", "names"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries but images has {n} classes")

    @property
    def num_classes(self) -> int:
        return self.images.shape[0]

    def subset(self, index: slice | Tensor) -> "OmniglotSplit":
        """The classes at ``index`` (a slice or an int64 index tensor), metadata included."""
        rows = torch.arange(self.num_classes)[index]  # (kept,)
        return OmniglotSplit(self.images[rows], self.character_ids[rows], self.alphabet_index[rows],
                             self.rotation[rows], self.alphabets, tuple(self.names[i] for i in rows.tolist()))

    def sampler(self, n_way: int, k_shot: int, q_query: int) -> EpisodeSampler:
        """An :class:`EpisodeSampler` over these classes; episodes come as ``(tasks, shots, 1, 28, 28)``."""
        return EpisodeSampler(self.images, n_way, k_shot, q_query)


def concat(parts: Sequence[OmniglotSplit]) -> OmniglotSplit:
    """Classes of ``parts`` one after the other; alphabet indices are shifted to the joined list."""
    offsets = np.cumsum([0] + [len(p.alphabets) for p in parts[:-1]]).tolist()
    return OmniglotSplit(torch.cat([p.images for p in parts]),  # (classes, 20, 28, 28)
                         torch.cat([p.character_ids for p in parts]),
                         torch.cat([p.alphabet_index + o for p, o in zip(parts, offsets)]),
                         torch.cat([p.rotation for p in parts]),
                         tuple(a for p in parts for a in p.alphabets), tuple(n for p in parts for n in p.names))


def rotate(split: OmniglotSplit, rotations: Sequence[int] = (0, 90, 180, 270)) -> OmniglotSplit:
    """Each class becomes ``len(rotations)`` classes, rotated by those multiples of 90 degrees.

    Santoro et al. 2016 and Vinyals et al. 2016 add rotated characters as *new classes* for
    meta-training. Output class ``c * len(rotations) + j`` is class ``c`` rotated by ``rotations[j]``
    counter-clockwise (``torch.rot90``).
    """
    rotations = tuple(rotations)
    if not rotations or len(set(rotations)) != len(rotations) or any(r not in (0, 90, 180, 270) for r in rotations):
        raise ValueError(f"rotations must be distinct values from (0, 90, 180, 270), got {rotations!r}")
    if rotations == (0,):
        return split
    images = torch.stack([torch.rot90(split.images, r // 90, dims=(-2, -1)) for r in rotations],
                         dim=1)  # (classes, rotations, 20, 28, 28)
    r = len(rotations)
    added = torch.tensor(rotations).repeat(split.num_classes)  # (classes * rotations,)
    return OmniglotSplit(images.flatten(0, 1),  # (classes * rotations, 20, 28, 28)
                         split.character_ids.repeat_interleave(r), split.alphabet_index.repeat_interleave(r),
                         (split.rotation.repeat_interleave(r) + added) % 360, split.alphabets,
                         tuple(n for n in split.names for _ in range(r)))


def load_omniglot(which: str = "background", root: str | os.PathLike | None = None, *, size: int = 28,
                  resample: str = "lanczos", download: bool | None = None, strict: bool = True,
                  cache: bool = True) -> OmniglotSplit:
    """One of Lake's sets (``SETS``) as an :class:`OmniglotSplit` of ``(characters, 20, size, size)``.

    ``root`` is the folder with the zips (default ``data_root()/"omniglot"``). ``strict`` also checks
    the official alphabet and character counts. The processed set is cached in
    ``cache_dir("omniglot")`` under a key of the zip's path, size and mtime and the preprocessing.
    """
    if which not in SETS:
        raise ValueError(f"which must be one of {sorted(SETS)}, got {which!r}")
    if resample not in RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(RESAMPLE)}, got {resample!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    path = omniglot_file(f"images_{which}.zip", root, download)
    target = _cache_path(path, which, size, resample, strict) if cache else None
    if target is not None and target.is_file():
        try:
            return _split_from_record(checkpoint.load(target))
        except (ValueError, KeyError, TypeError):
            pass  # unreadable or stale cache: rebuild it below
    record = _read_set(path, f"images_{which}", size, resample, SETS[which] if strict else None)
    if target is not None:
        checkpoint.save(record, target)
    return _split_from_record(record)


def lake_split(root: str | os.PathLike | None = None, *, rotations: Sequence[int] = (0,),
               **load_kwargs: Any) -> dict[str, OmniglotSplit]:
    """Lake et al. 2015: ``train`` = background (30 alphabets), ``test`` = evaluation (20 alphabets)."""
    return {"train": rotate(load_omniglot("background", root, **load_kwargs), rotations),
            "test": load_omniglot("evaluation", root, **load_kwargs)}


def small_split(which: int = 1, root: str | os.PathLike | None = None, *, rotations: Sequence[int] = (0,),
                **load_kwargs: Any) -> dict[str, OmniglotSplit]:
    """Lake et al. 2015's minimal background set ``small1`` or ``small2`` (5 alphabets) and the evaluation set."""
    if which not in (1, 2):
        raise ValueError(f"which must be 1 or 2 (images_background_small1/2.zip), got {which!r}")
    return {"train": rotate(load_omniglot(f"background_small{which}", root, **load_kwargs), rotations),
            "test": load_omniglot("evaluation", root, **load_kwargs)}


def vinyals_split(root: str | os.PathLike | None = None, *, train: int = 1200, validation: int = 0,
                  rotations: Sequence[int] = (0, 90, 180, 270), **load_kwargs: Any) -> dict[str, OmniglotSplit]:
    """The 1200/423 character split (Santoro et al. 2016; Vinyals et al. 2016; Snell et al. 2017; MAML).

    Convention used here: all 1623 characters in id order (background 1-964, then evaluation
    965-1623); the first ``train`` are meta-training, the rest (423) meta-test. ``validation > 0``
    carves the *last* ``validation`` of the training characters out as ``val`` (MAML keeps 100).
    ``rotations`` make new classes for ``train`` only. This deterministic cut has the papers' sizes but
    not their exact characters: ProtoNets uses Vinyals' fixed lists and MAML a ``random.seed(1)``
    shuffle of the character folders, neither of which is id order.
    """
    every = concat([load_omniglot("background", root, **load_kwargs),
                    load_omniglot("evaluation", root, **load_kwargs)])  # (1623, 20, 28, 28)
    if not 0 <= validation < train < every.num_classes:
        raise ValueError(f"need 0 <= validation < train < {every.num_classes} characters, "
                         f"got train={train}, validation={validation}")
    split = {"train": rotate(every.subset(slice(0, train - validation)), rotations)}
    if validation:
        split["val"] = every.subset(slice(train - validation, train))
    split["test"] = every.subset(slice(train, None))
    return split


def preprocess_png(data: bytes, size: int = 28, resample: str = "lanczos") -> np.ndarray:
    """One Omniglot PNG (105x105, white background) as ``(size, size)`` uint8 with ink = 255."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.size != SOURCE_SIZE:
            raise ValueError(f"image is {image.size[0]}x{image.size[1]}, expected 105x105")
        grey = image.convert("L")  # (105, 105) white = 255
    small = grey.resize((size, size), RESAMPLE[resample])  # (size, size)
    return 255 - np.asarray(small, dtype=np.uint8)  # (size, size) ink = 255


def decode_member(archive: zipfile.ZipFile, member: str, path: Path, size: int, resample: str) -> np.ndarray:
    """:func:`preprocess_png` of one zip member; ``ValueError`` naming the zip and member on failure."""
    try:
        return preprocess_png(archive.read(member), size, resample)
    except (OSError, SyntaxError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"{path}: cannot read image {member!r} ({error}); the zip is corrupt, "
                         "replace it with a fresh copy") from error


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open ``path``; a truncated or corrupt archive gives a ``ValueError`` naming the file."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a readable zip file ({error}); it may be truncated or corrupt, "
                         "replace it with a fresh copy") from error


def layout_error(path: Path, layout: str, problems: list[str]) -> ValueError:
    """A ``ValueError`` saying that ``path`` does not have ``layout``, listing up to 10 problems."""
    shown = "\n  - ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
    return ValueError(f"{path} does not have {layout}:\n  - {shown}")


def _layout(names: list[str], top: str, path: Path,
            expected: tuple[int, int] | None) -> list[tuple[str, str, int, list[str]]]:
    """``[(alphabet, character, id, [member per drawer])]`` sorted by id, or ``ValueError`` listing problems."""
    pattern = re.compile(rf"{re.escape(top)}/([^/]+)/(character\d+)/(\d+)_(\d+)\.png")
    found: dict[tuple[str, str], dict[int, list]] = {}
    unexpected = []
    for name in names:
        if name.endswith("/") or name.startswith("__MACOSX/") or Path(name).name.startswith("."):
            continue
        match = pattern.fullmatch(name)
        if match is None:
            unexpected.append(name)
            continue
        alphabet, character, cid, drawer = match.groups()
        found.setdefault((alphabet, character), {}).setdefault(int(cid), []).append((int(drawer), name))
    problems = [f"no PNG files under {top}/"] if not found else []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected entries, e.g. {unexpected[:3]}")
    owner: dict[int, tuple[str, str]] = {}
    for (alphabet, character), by_id in found.items():
        if len(by_id) > 1:
            problems.append(f"{alphabet}/{character} mixes character ids {sorted(by_id)}")
        for cid, drawings in by_id.items():
            if cid in owner:
                problems.append(f"character id {cid} is used by {'/'.join(owner[cid])} and {alphabet}/{character}")
            owner[cid] = (alphabet, character)
            drawers = sorted(d for d, _ in drawings)
            if drawers != list(range(1, DRAWERS + 1)):
                problems.append(f"{alphabet}/{character} has drawers {drawers}, expected 01..20")
    if expected is not None and not problems:
        counts = (len({a for a, _ in found}), len(found))
        if counts != expected:
            problems.append(f"{counts[0]} alphabets and {counts[1]} characters, expected {expected[0]} and "
                            f"{expected[1]} (pass strict=False to accept a partial set)")
    if problems:
        raise layout_error(path, f"the official Omniglot layout {top}/<Alphabet>/characterNN/<id>_<dd>.png "
                                 "with 20 drawers each", problems)
    rows = [(a, c, cid, [n for _, n in sorted(d)]) for (a, c), by_id in found.items() for cid, d in by_id.items()]
    return sorted(rows, key=lambda row: row[2])


def _read_set(path: Path, top: str, size: int, resample: str, expected: tuple[int, int] | None) -> dict:
    """Validate and decode one set zip into the cache record (uint8 images, ink = 255)."""
    with open_zip(path) as archive:
        layout = _layout(archive.namelist(), top, path, expected)
        pixels = np.empty((len(layout), DRAWERS, size, size), dtype=np.uint8)  # (characters, 20, size, size)
        for c, (_, _, _, members) in enumerate(layout):
            for d, member in enumerate(members):
                pixels[c, d] = decode_member(archive, member, path, size, resample)  # (size, size)
    alphabets = list(dict.fromkeys(a for a, _, _, _ in layout))
    return {"version": _CACHE_VERSION, "images": torch.from_numpy(pixels),
            "character_ids": torch.tensor([cid for _, _, cid, _ in layout], dtype=torch.int64),
            "alphabet_index": torch.tensor([alphabets.index(a) for a, _, _, _ in layout], dtype=torch.int64),
            "alphabets": alphabets, "characters": [c for _, c, _, _ in layout]}


def _split_from_record(record: dict) -> OmniglotSplit:
    if record["version"] != _CACHE_VERSION:
        raise KeyError("cache version")
    images = record["images"].to(torch.float32).div_(255.0)  # (characters, 20, size, size) in [0, 1]
    alphabets = tuple(record["alphabets"])
    index = record["alphabet_index"]  # (characters,)
    names = tuple((alphabets[a], c) for a, c in zip(index.tolist(), record["characters"]))
    return OmniglotSplit(images, record["character_ids"], index, torch.zeros_like(index), alphabets, names)


def _cache_path(path: Path, which: str, size: int, resample: str, strict: bool) -> Path:
    """Cheap cache key: the zip's resolved path, size and mtime, and the preprocessing settings."""
    stat = path.stat()
    key = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, size, resample, strict, _CACHE_VERSION])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir("omniglot") / f"{which}-{size}px-{resample}-{digest}.pt"


__all__ = ["OmniglotSplit", "lake_split", "load_omniglot", "rotate", "small_split", "vinyals_split"]
