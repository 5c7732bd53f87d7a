"""Omniglot loading, splits, rotations, the episodic sampler and Lake's one-shot runs.

Unit tests use small fake zips in the official layout (``omniglot_fixtures``) and a temporary
``MAPPING_CACHE``; the integration tests run only when ``$MAPPING_DATA/omniglot`` holds the real files.
"""
from __future__ import annotations

import os
import shutil
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import mapping.data.files as files
import mapping.data.omniglot as omniglot
import omniglot_fixtures as fx
from mapping.data.episodes import EpisodeSampler
from mapping.data.lake import evaluate_lake, load_lake_runs
from mapping.data.omniglot import lake_split, load_omniglot, rotate, small_split, vinyals_split
from omniglot_fixtures import requires_real

BACKGROUND_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background.zip"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAPPING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MAPPING_DOWNLOAD", raising=False)


@pytest.fixture
def root(fake_root: Path, tmp_path: Path) -> Path:
    """A private copy of the fake root, for tests that damage the files."""
    return Path(shutil.copytree(fake_root, tmp_path / "omniglot"))


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "cache").rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------- loading

def test_load_shapes_order_and_metadata(fake_root: Path) -> None:
    split = load_omniglot("background", fake_root, strict=False)
    assert split.images.shape == (12, 20, 28, 28) and split.images.dtype == torch.float32
    assert 0.0 <= split.images.min() and split.images.max() <= 1.0
    assert split.character_ids.tolist() == list(range(1, 13))  # id order, not the zip's alphabetical order
    assert split.alphabets == ("Gamma", "Alpha", "Beta")
    assert split.alphabet_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert split.names[0] == ("Gamma", "character01") and split.names[4] == ("Alpha", "character01")
    assert split.rotation.eq(0).all()
    evaluation = load_omniglot("evaluation", fake_root, strict=False)
    assert evaluation.character_ids.tolist() == list(range(13, 25))


def test_ink_is_one_and_background_zero(fake_root: Path) -> None:
    image = load_omniglot("background", fake_root, strict=False).images[0, 0]  # the known square, rows 30-74
    assert image[12:16, 12:16].min() == 1.0  # inside the square (30/3.75 = 8 .. 75/3.75 = 20)
    assert image[:4].max() == 0.0 and image[:, 24:].max() == 0.0  # white background -> 0 (beyond the filter)
    assert abs(image.sum().item() - (45 / 3.75) ** 2) < 10  # area preserved by the antialiased resize
    binary = load_omniglot("background", fake_root, strict=False, resample="nearest").images
    assert set(binary.unique().tolist()) <= {0.0, 1.0} and binary[0, 0, 8:20, 8:20].min() == 1.0


def test_cache_is_atomic_and_reused(fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    replaced, real_replace = [], os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst)))
    first = load_omniglot("background", fake_root, strict=False)
    (written,) = cache_files(tmp_path)
    assert written.suffix == ".pt" and replaced[-1][1] == written
    assert replaced[-1][0].parent == written.parent and replaced[-1][0].name.endswith(".tmp")  # temp + rename

    def untouchable(*args, **kwargs):
        raise AssertionError("the cached load opened a zip")
    with monkeypatch.context() as m:
        m.setattr(omniglot.zipfile, "ZipFile", untouchable)
        m.setattr(omniglot, "_read_set", untouchable)
        second = load_omniglot("background", fake_root, strict=False)
    assert torch.equal(first.images, second.images) and first.names == second.names
    load_omniglot("background", fake_root, strict=False, resample="bilinear")  # other settings, other key
    assert len(cache_files(tmp_path)) == 2


def test_cache_key_follows_the_source_file(root: Path, tmp_path: Path) -> None:
    load_omniglot("background", root, strict=False)
    zip_path = root / "images_background.zip"
    os.utime(zip_path, ns=(zip_path.stat().st_atime_ns, zip_path.stat().st_mtime_ns + 10**9))
    load_omniglot("background", root, strict=False)
    assert len(cache_files(tmp_path)) == 2


def test_unreadable_cache_is_rebuilt(fake_root: Path, tmp_path: Path) -> None:
    first = load_omniglot("background", fake_root, strict=False)
    (written,) = cache_files(tmp_path)
    written.write_bytes(b"garbage")
    assert torch.equal(load_omniglot("background", fake_root, strict=False).images, first.images)


# ---------------------------------------------------------------------------------- splits, rotations

def test_rotations_quadruple_classes_with_rot90(fake_root: Path) -> None:
    split = load_omniglot("background", fake_root, strict=False)
    rotated = rotate(split)
    assert rotated.images.shape == (48, 20, 28, 28)
    for c in range(split.num_classes):
        for j in range(4):
            expected = np.rot90(split.images[c].numpy(), j, axes=(1, 2))  # counter-clockwise
            assert np.array_equal(rotated.images[4 * c + j].numpy(), expected)
    assert rotated.rotation.tolist() == [0, 90, 180, 270] * 12
    assert rotated.character_ids.tolist() == [i for i in range(1, 13) for _ in range(4)]
    assert rotated.names[4:8] == (split.names[1],) * 4
    assert rotate(split, (0,)) is split
    for bad in ((45,), (0, 0), ()):
        with pytest.raises(ValueError, match="rotations"):
            rotate(split, bad)


def test_splits_are_disjoint(fake_root: Path) -> None:
    lake = lake_split(fake_root, strict=False)
    assert set(lake["train"].character_ids.tolist()) == set(range(1, 13))
    assert set(lake["test"].character_ids.tolist()) == set(range(13, 25))
    split = vinyals_split(fake_root, train=16, validation=4, strict=False)
    ids = {k: set(v.character_ids.tolist()) for k, v in split.items()}
    assert ids == {"train": set(range(1, 13)), "val": set(range(13, 17)), "test": set(range(17, 25))}
    assert split["train"].num_classes == 48 and split["train"].rotation.unique().tolist() == [0, 90, 180, 270]
    assert split["val"].rotation.eq(0).all() and split["test"].rotation.eq(0).all()
    assert split["test"].alphabets[split["test"].alphabet_index[0]] == "Epsilon"  # alphabet indices shifted
    plain = vinyals_split(fake_root, train=16, rotations=(0,), strict=False)
    assert sorted(plain) == ["test", "train"] and plain["train"].num_classes == 16
    assert set(small_split(1, fake_root, strict=False)["train"].character_ids.tolist()) == set(range(1, 9))
    assert set(small_split(2, fake_root, strict=False)["train"].character_ids.tolist()) == set(range(5, 13))
    with pytest.raises(ValueError, match="train"):
        vinyals_split(fake_root, train=30, strict=False)


def test_strict_checks_official_counts(fake_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected 30 and 964.*strict=False"):
        load_omniglot("background", fake_root)
    assert cache_files(tmp_path) == []


# ------------------------------------------------------------------------------------------ sampler

def id_images(classes: int = 10, examples: int = 20) -> torch.Tensor:
    """``(classes, examples, 3)`` where every value of example ``e`` of class ``c`` is ``c * examples + e``."""
    return torch.arange(classes * examples, dtype=torch.float32).view(classes, examples, 1).expand(-1, -1, 3)


def test_sampler_shapes_labels_and_no_shared_image() -> None:
    batch = EpisodeSampler(id_images(), n_way=5, k_shot=3, q_query=4).sample(7, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (7, 15, 3) and batch.query_x.shape == (7, 20, 3)
    assert batch.support_y.dtype == torch.int64 and batch.info["classes"].shape == (7, 5)
    assert batch.support_y.eq(torch.arange(5).repeat_interleave(3)).all()
    assert batch.query_y.eq(torch.arange(5).repeat_interleave(4)).all()
    support_ids, query_ids = batch.support_x[..., 0].long(), batch.query_x[..., 0].long()  # (7, 15), (7, 20)
    classes = batch.info["classes"]
    assert torch.equal(classes.gather(1, batch.support_y), support_ids // 20)  # label j <-> classes[:, j]
    assert torch.equal(classes.gather(1, batch.query_y), query_ids // 20)
    assert torch.equal(batch.info["support_examples"].flatten(1), support_ids % 20)
    every = torch.cat([support_ids, query_ids], dim=1).sort(dim=1).values  # (7, 35)
    assert every.diff(dim=1).ne(0).all()  # no image twice in a task: none both support and query
    assert classes.sort(dim=1).values.diff(dim=1).ne(0).all()  # classes without replacement


def test_sampler_omniglot_shape_and_coverage() -> None:
    images = torch.rand(30, 20, 28, 28)
    batch = EpisodeSampler(images, 5, 1, 15).sample(32, torch.Generator().manual_seed(1))
    assert batch.support_x.shape == (32, 5, 1, 28, 28) and batch.query_x.shape == (32, 75, 1, 28, 28)
    assert batch.info["classes"].unique().numel() == 30  # 160 draws cover all 30 classes
    assert EpisodeSampler(images, 5, 1, 1, channel=False).sample(2).support_x.shape == (2, 5, 28, 28)


def test_sampler_seeds_reproduce_and_differ() -> None:
    sampler = EpisodeSampler(id_images(), 5, 2, 3)
    a, b, c = (sampler.sample(4, torch.Generator().manual_seed(s)) for s in (3, 3, 4))
    assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))
    assert not torch.equal(a.support_x, c.support_x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_way=11, k_shot=1, q_query=1), r"n_way must be an int in \[1, 10\]"),
    (dict(n_way=5, k_shot=15, q_query=6), r"k_shot \+ q_query must be at most 20"),
    (dict(n_way=0, k_shot=1, q_query=1), "n_way"),
    (dict(n_way=5, k_shot=0, q_query=1), "k_shot"),
    (dict(n_way=5, k_shot=1, q_query=-1), "q_query"),
    (dict(n_way=2.5, k_shot=1, q_query=1), "n_way"),
    (dict(n_way=5, k_shot=21, q_query=1), r"k_shot must be an int in \[1, 20\]"),
])
def test_sampler_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EpisodeSampler(id_images(), **kwargs)


def test_sampler_rejects_bad_tasks() -> None:
    with pytest.raises(ValueError, match="tasks"):
        EpisodeSampler(id_images(), 5, 1, 1).sample(0)


# ------------------------------------------------------------------------------------- bad inputs

def test_missing_files_explain_where_and_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAPPING_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError) as error:
        load_omniglot("background")
    message = str(error.value)
    for needed in (str(tmp_path / "data" / "omniglot" / "images_background.zip"), "images_evaluation.zip",
                   "all_runs.zip", "MAPPING_DATA", "download=True", "MAPPING_DOWNLOAD=1", BACKGROUND_URL):
        assert needed in message
    assert all(len(line) <= 79 or " " not in line.strip() for line in message.splitlines())  # fits a notebook
    assert not (tmp_path / "data").exists()
    with pytest.raises(FileNotFoundError, match="all_runs.zip"):
        load_lake_runs(tmp_path / "elsewhere")


def test_truncated_zip_names_the_file_and_leaves_no_cache(root: Path, tmp_path: Path) -> None:
    fx.truncate(root / "images_background.zip")
    with pytest.raises(ValueError, match=r"images_background\.zip.*truncated"):
        load_omniglot("background", root, strict=False)
    assert cache_files(tmp_path) == []
    fx.make_runs_zip(root / "all_runs.zip")
    fx.truncate(root / "all_runs.zip", 0.9)
    with pytest.raises(ValueError, match=r"all_runs\.zip"):
        load_lake_runs(root, strict=False)


@pytest.mark.parametrize("damage", [b"not a png", "truncated", "small"])
def test_corrupt_png_names_the_member(root: Path, tmp_path: Path, damage: object) -> None:
    member = "images_background/Alpha/character02/0006_07.png"

    def mutate(entries: dict[str, bytes]) -> None:
        if damage == "truncated":
            entries[member] = entries[member][:60]
        elif damage == "small":
            entries[member] = fx.png_bytes(np.zeros((50, 50), dtype=bool))
        else:
            entries[member] = damage
    fx.make_set_zip(root / "images_background.zip", "images_background", fx.BACKGROUND, 1, mutate=mutate)
    with pytest.raises(ValueError, match=rf"images_background\.zip.*{member}"):
        load_omniglot("background", root, strict=False)
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize("mutate, top, match", [
    (lambda e: e.pop("images_background/Beta/character03/0011_20.png"), "images_background", "drawers"),
    (lambda e: e.update({"images_background/notes.txt": b"hi"}), "images_background", "1 unexpected entries"),
    (None, "omniglot", "no PNG files under images_background/"),
])
def test_wrong_structure_is_reported(root: Path, mutate, top: str, match: str) -> None:
    fx.make_set_zip(root / "images_background.zip", top, fx.BACKGROUND, 1, mutate=mutate)
    with pytest.raises(ValueError, match=match):
        load_omniglot("background", root, strict=False)


def test_bad_load_arguments(fake_root: Path) -> None:
    with pytest.raises(ValueError, match="which"):
        load_omniglot("training", fake_root)
    with pytest.raises(ValueError, match="resample"):
        load_omniglot("background", fake_root, resample="cubic")


# ---------------------------------------------------------------------------------------- download

@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """A fake upstream: ``_fetch`` copies a fake background zip; returns it and the fetched URLs."""
    source = fx.make_set_zip(tmp_path / "served.zip", "images_background", fx.BACKGROUND, 1)
    urls: list[str] = []

    def fetch(url: str, dest: Path) -> None:
        urls.append(url)
        shutil.copyfile(source, dest)
    monkeypatch.setattr(files, "_fetch", fetch)
    return source, urls


@pytest.mark.parametrize("by_env", [False, True])
def test_download_verified_then_moved_into_place(served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 by_env: bool) -> None:
    source, urls = served
    monkeypatch.setitem(files.MD5, "images_background.zip", fx.md5(source))
    if by_env:
        monkeypatch.setenv("MAPPING_DOWNLOAD", "1")
    split = load_omniglot("background", tmp_path / "new", download=None if by_env else True, strict=False)
    assert urls == [BACKGROUND_URL] and split.num_classes == 12
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["images_background.zip"]


def test_download_checksum_mismatch_leaves_nothing(served, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="md5.*68d2efa1b9178cc56df9314c21c6e718"):
        load_omniglot("background", tmp_path / "new", download=True, strict=False)
    assert list((tmp_path / "new").iterdir()) == []


def test_download_network_error_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fetch(url: str, dest: Path) -> None:
        dest.write_bytes(b"partial")
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(files, "_fetch", fetch)
    with pytest.raises(OSError, match="could not download"):
        load_omniglot("background", tmp_path / "new", download=True)
    assert list((tmp_path / "new").iterdir()) == []


# ------------------------------------------------------------------------------------- Lake's runs

def test_lake_runs_and_error_rates(tmp_path: Path) -> None:
    labels = fx.make_runs_zip(tmp_path / "all_runs.zip", runs=2, ways=5)
    runs = load_lake_runs(tmp_path, strict=False)
    assert runs.training.shape == (2, 5, 28, 28) and runs.test.shape == (2, 5, 28, 28)
    assert runs.labels.tolist() == labels.tolist() and 0.5 < runs.training.max() <= 1.0
    exact = evaluate_lake(embed=lambda x: x, runs=runs)  # test items are copies of their class image
    assert exact.error == 0.0 and exact.run_errors.tolist() == [0.0, 0.0]
    constant = evaluate_lake(lambda support, query: torch.zeros(5, dtype=torch.int64), runs=runs)
    assert constant.error == pytest.approx(100 * (labels != 0).mean())
    assert constant.run_errors.tolist() == pytest.approx((100 * (labels != 0).mean(axis=1)).tolist())
    with pytest.raises(ValueError, match="shape"):
        evaluate_lake(lambda support, query: torch.zeros(4, dtype=torch.int64), runs=runs)
    with pytest.raises(ValueError, match="exactly one"):
        evaluate_lake(lambda s, q: q, embed=lambda x: x, runs=runs)
    with pytest.raises(ValueError, match="expected 20 of 20"):
        load_lake_runs(tmp_path)


def test_lake_runs_bad_labels(tmp_path: Path) -> None:
    fx.make_runs_zip(tmp_path / "good.zip", runs=2, ways=5)
    with omniglot.zipfile.ZipFile(tmp_path / "good.zip") as archive:
        entries = {n: archive.read(n) for n in archive.namelist() if not n.endswith("/")}
    entries["run02/class_labels.txt"] = b"\n".join(entries["run02/class_labels.txt"].splitlines()[:-1])
    del entries["run01/test/item03.png"]
    fx.write_zip(tmp_path / "all_runs.zip", entries)
    with pytest.raises(ValueError, match=r"(?s)item03\.png is missing.*no training class for item05"):
        load_lake_runs(tmp_path, strict=False)


# ------------------------------------------------------------------------- the real data, if present



@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real_cache")


@requires_real
def test_real_sets_load_and_cache(real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAPPING_CACHE", str(real_cache))
    start = time.perf_counter()
    background = load_omniglot("background")
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = load_omniglot("background")
    cached = time.perf_counter() - start
    print(f"\nbackground: first load {first:.2f} s, cached load {cached:.3f} s")
    assert cached < 2.0 and torch.equal(background.images, again.images)
    assert background.images.shape == (964, 20, 28, 28) and len(background.alphabets) == 30
    assert background.character_ids.tolist() == list(range(1, 965))
    assert 0.05 < background.images.mean() < 0.12  # about 8% ink
    evaluation = load_omniglot("evaluation")
    assert evaluation.images.shape == (659, 20, 28, 28) and len(evaluation.alphabets) == 20
    assert evaluation.character_ids.tolist() == list(range(965, 1624))


@requires_real
def test_real_splits(real_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAPPING_CACHE", str(real_cache))
    split = vinyals_split()
    assert split["train"].images.shape == (4800, 20, 28, 28) and split["test"].num_classes == 423
    carved = vinyals_split(validation=100, rotations=(0,))
    assert [carved[k].num_classes for k in ("train", "val", "test")] == [1100, 100, 423]
    assert small_split(1)["train"].num_classes == 136 and small_split(2)["train"].num_classes == 156


@requires_real
def test_real_lake_runs_pixel_nearest_neighbour() -> None:
    runs = load_lake_runs()
    assert runs.num_runs == 20 and runs.training.shape == (20, 20, 28, 28)
    result = evaluate_lake(embed=lambda x: x, runs=runs)
    print(f"\nLake one-shot runs, pixel nearest neighbour: {result.error:.2f}% error")
    assert 4.5 < result.error < 95.0


def test_download_tables_cover_every_set():
    """files.py lists the set names itself (no import cycle): it must stay in step with omniglot.SETS."""
    from mapping.data import files, omniglot
    expected = {f"images_{name}.zip" for name in omniglot.SETS} | {"all_runs.zip"}
    assert set(files.URLS) == expected and set(files.MD5) == expected
