import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import omniglot_fixtures as fx

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # see the root conftest.py
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def float64():
    """Run a test in float64 (gradient checks), restoring the default afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The whole book built once, as the README builds it, with warnings as errors: the ``_build/html`` folder.

    Smoke mode (``MAPPING_MODE``) with progress bars on, as a reader's build shows them. Tests that use it carry
    ``@pytest.mark.xdist_group("book")`` so that one worker builds it for all of them. ``MAPPING_BOOK_HTML``
    pointing at an existing ``_build/html`` skips the build.
    """
    if os.environ.get("MAPPING_BOOK_HTML"):  # a developer's existing build, to re-run the page tests quickly
        return Path(os.environ["MAPPING_BOOK_HTML"])
    out = tmp_path_factory.mktemp("book")
    jb = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
    env = {**os.environ, "MAPPING_MODE": os.environ.get("MAPPING_MODE", "smoke"), "OMP_NUM_THREADS": "1",
           "MAPPING_PROGRESS": "1"}
    proc = subprocess.run([jb, "build", str(ROOT), "-W", "-n", "--keep-going", "--path-output", str(out)],
                          capture_output=True, text=True, env=env, timeout=1500)
    log = proc.stdout + proc.stderr
    warnings = [line for line in log.splitlines() if "WARNING" in line and "IPKernelApp" not in line]
    assert proc.returncode == 0 and not warnings, "\n".join(warnings) or log[-5000:]
    return out / "_build" / "html"


@pytest.fixture(scope="session")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small fake Omniglot zips (``omniglot_fixtures``), made once per session."""
    return fx.make_omniglot_root(tmp_path_factory.mktemp("omniglot"))


@pytest.fixture
def fake_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A temporary ``MAPPING_CACHE``, and no downloads."""
    monkeypatch.setenv("MAPPING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MAPPING_DOWNLOAD", raising=False)


@pytest.fixture
def smoke_record(tmp_path, monkeypatch, fake_root, fake_cache):
    """``smoke_record(name, module)``: ``python -m mapping.reproduce <name> --mode smoke`` with ``module.run`` reading
    the fake Omniglot zips; returns the JSON record it wrote."""
    import json

    from mapping import reproduce

    def run(name: str, module) -> dict:
        torch.set_num_threads(1)
        real_run = module.run
        monkeypatch.setattr(module, "run",
                            lambda config, progress=False: real_run(config, fake_root, progress, strict=False))
        assert reproduce.main([name, "--mode", "smoke", "--out", str(tmp_path)]) == 0
        return json.loads((tmp_path / f"{name}.json").read_text())

    return run

