"""The notebooks' Colab cell (book/_ext/colab_cell.py), run with Colab's detection forced: in a fresh virtual
environment without ``mapping`` it clones this checkout and installs the package from it (keeping the torch that
is there, as Colab's is kept); run again, or where ``mapping`` is importable, it does nothing."""
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
from colab_cell import CELL  # noqa: E402


def test_every_notebook_starts_with_the_cell():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert f'"{url}"' in CELL  # the repository the launch buttons open
    for path in sorted((ROOT / "book").rglob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        first = next(c for c in cells if c["cell_type"] == "code")
        assert "".join(first["source"]) == CELL, f"{path.relative_to(ROOT)}: run python book/_ext/colab_cell.py"
    assert max(len(line) for line in CELL.splitlines()) <= 79


def test_cell_does_nothing_off_colab_or_when_installed():
    env = {k: v for k, v in os.environ.items() if k not in ("MAPPING_COLAB",)}
    off = subprocess.run([sys.executable, "-c", CELL], env=env, capture_output=True, text=True, timeout=60)
    forced = subprocess.run([sys.executable, "-c", CELL], env={**env, "MAPPING_COLAB": "1"},
                            capture_output=True, text=True, timeout=60)  # mapping is importable here
    assert off.returncode == forced.returncode == 0 and off.stdout == forced.stdout == ""


@pytest.mark.slow
def test_cell_installs_mapping_from_the_repository(tmp_path):
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("the checkout has no git history to clone")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # torch and the other requirements visible, as Colab's are, but not this checkout's editable mapping
    Path(site, "colab_runtime.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = [str(python), "-c", "import importlib.util; print(importlib.util.find_spec('mapping') is None)"]
    assert subprocess.run(probe, cwd=tmp_path, capture_output=True, text=True).stdout.strip() == "True"
    env = {**os.environ, "MAPPING_COLAB": "1", "MAPPING_REPO": str(ROOT), "MAPPING_CLONE": str(tmp_path / "clone"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    first = subprocess.run([str(python), "-c", CELL + "\nimport mapping\nprint(mapping.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert f"installed mapping from {ROOT}" in first.stdout
    assert str(tmp_path / "clone" / "mapping") in first.stdout
    torch_here = subprocess.run([str(python), "-c", "import torch; print(torch.__file__)"], cwd=tmp_path,
                                capture_output=True, text=True).stdout.strip()
    assert torch_here.startswith(sysconfig.get_paths()["purelib"])  # the runtime's torch was kept
    again = subprocess.run([str(python), "-c", CELL], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and again.stdout == ""  # installed now: the cell does nothing


def newer_python() -> str | None:
    """An interpreter of Python 3.12 or later that runs (pyenv's shims name versions they cannot start)."""
    import glob
    import shutil
    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.1[2-9]*/bin/python3")), reverse=True)
    candidates += [shutil.which(p) for p in ("python3.13", "python3.12") if shutil.which(p)]
    for python in candidates:
        ok = subprocess.run([python, "-c", "import sys; assert sys.version_info >= (3, 12)"], capture_output=True)
        if ok.returncode == 0:
            return python
    return None


COMPILE = """
import pathlib, sys, warnings
warnings.simplefilter("error")  # a SyntaxWarning (an invalid escape, say) is an error on newer Pythons
bad = []
for path in sys.argv[1:]:
    for file in sorted(pathlib.Path(path).rglob("*.py")):
        try:
            compile(file.read_text(), str(file), "exec")
        except (SyntaxError, Warning) as error:
            bad.append(f"{file}: {error}")
print("\\n".join(bad))
sys.exit(1 if bad else 0)
"""


def test_package_and_notebooks_compile_on_colabs_newer_python(tmp_path):
    """Colab runs Python 3.13: every module of the package and every notebook's code compiles with it, warnings
    as errors (torch for that Python is not installable here, so this is the part of a newer runtime that can be
    checked here)."""
    newer = newer_python()
    if newer is None:
        pytest.skip("no Python 3.12 or later on this machine to compile with")
    for i, path in enumerate(sorted((ROOT / "book").rglob("*.ipynb"))):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        (tmp_path / f"nb{i}_{path.stem}.py").write_text(code)
    out = subprocess.run([newer, "-c", COMPILE, str(ROOT / "mapping"), str(tmp_path)], capture_output=True,
                         text=True, timeout=300)
    version = subprocess.run([newer, "--version"], capture_output=True, text=True).stdout.strip()
    assert out.returncode == 0, f"{version} cannot compile:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
