"""The author's cached build (book/_ext/package_cache.py): a page re-executes when its notebook changes AND when
the package code it imports changes, and only then; the readers' build (no MAPPING_BOOK_CACHE) executes every page
of a fresh folder and, rebuilt in place, the pages whose notebook or code changed.

A two-page book over a two-module package ``toypkg`` is built with ``jupyter-book build`` in a temporary folder,
edited, and built again; each page prints a module constant and a random number drawn at execution, so the HTML
tells whether the page ran again.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import package_cache  # noqa: E402

pytestmark = pytest.mark.slow


def notebook(code: str) -> str:
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": code}
    return json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Page"}, cell],
                       "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                   "language": "python"}},
                       "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture
def toy_book(tmp_path):
    pkg = tmp_path / "toypkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import helper\nVALUE = 1\n")
    (pkg / "sub" / "helper.py").write_text("X = 0\n")
    (pkg / "b.py").write_text("VALUE = 2\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run_b.json").write_text('{"metric": 1}')
    draw = "import random; print('run', random.random())\n"
    (tmp_path / "page_a.ipynb").write_text(notebook("from toypkg import a\nprint('value', a.VALUE)\n" + draw))
    (tmp_path / "page_b.ipynb").write_text(notebook(
        "import toypkg.b as b\nrecord = 'run_b'\nprint('value', b.VALUE)\n" + draw))
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: page_a\nchapters:\n  - file: page_b\n")
    (tmp_path / "_config.yml").write_text(
        "title: toy\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: force\n"
        f"sphinx:\n  local_extensions:\n    package_cache: {ROOT / 'book' / '_ext'}\n"
        f"  config:\n    package_cache_package: {pkg}\n    package_cache_results: {tmp_path / 'results'}\n")
    return tmp_path


def build(book: Path, cached: bool = True, mode: str = "smoke") -> dict[str, tuple[str, str]]:
    """Build ``book``; ``{page: (value, random draw)}`` as the HTML shows them."""
    jb = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
    env = {**os.environ, "PYTHONPATH": f"{book}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "MAPPING_MODE": mode}
    env.pop("MAPPING_BOOK_CACHE", None)
    if cached:
        env["MAPPING_BOOK_CACHE"] = "1"
    proc = subprocess.run([jb, "build", str(book)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    shown = {}
    for page in ("page_a", "page_b"):
        text = (book / "_build" / "html" / f"{page}.html").read_text()
        shown[page] = (re.search(r"value (\d+)", text).group(1), re.search(r"run (0\.\d+)", text).group(1))
    return shown


def test_package_change_reruns_the_pages_that_import_it(toy_book):
    first = build(toy_book)
    assert first["page_a"][0] == "1" and first["page_b"][0] == "2"
    assert build(toy_book) == first  # nothing changed: both pages come from the cache
    (toy_book / "toypkg" / "sub" / "helper.py").write_text("X = 1\n")  # imported by a, through a's import
    (toy_book / "toypkg" / "a.py").write_text("from .sub import helper\nVALUE = 10\n")
    second = build(toy_book)
    assert second["page_a"][0] == "10" and second["page_a"][1] != first["page_a"][1]  # re-executed
    assert second["page_b"] == first["page_b"]  # b imports neither: its cached outputs stay
    (toy_book / "results" / "run_b.json").write_text('{"metric": 2}')  # the record page b names
    third = build(toy_book)
    assert third["page_b"][1] != first["page_b"][1] and third["page_a"] == second["page_a"]
    fourth = build(toy_book, mode="quick")  # a quick page is not a smoke page
    assert fourth["page_a"][1] != third["page_a"][1] and fourth["page_b"][1] != third["page_b"][1]


def test_notebook_edit_reruns_that_page_alone(toy_book):
    first = build(toy_book)
    nb = toy_book / "page_b.ipynb"
    nb.write_text(nb.read_text().replace("print('value', b.VALUE)", "print('value', b.VALUE + 1)"))
    second = build(toy_book)
    assert second["page_b"][0] == "3" and second["page_a"] == first["page_a"]


def test_readers_build_executes_and_reruns_on_package_change(toy_book):
    first = build(toy_book, cached=False)  # a fresh folder: every page executes, no jupyter-cache is written
    assert not list((toy_book / "_build" / ".jupyter_cache").glob("*.db"))
    (toy_book / "toypkg" / "b.py").write_text("VALUE = 20\n")
    second = build(toy_book, cached=False)  # Sphinx re-reads unchanged notebooks only when told to
    assert second["page_b"][0] == "20" and second["page_a"] == first["page_a"]


def test_dependencies_follow_relative_and_dotted_imports(tmp_path):
    pkg = tmp_path / "toypkg"
    (pkg / "sub").mkdir(parents=True)
    for f, text in {"__init__.py": "from . import a\n", "a.py": "from .sub.helper import X\n", "b.py": "",
                    "c.py": "", "sub/__init__.py": "from .. import c\n", "sub/helper.py": "X = 1\n"}.items():
        (pkg / f).write_text(text)
    nb = tmp_path / "page.ipynb"
    nb.write_text(notebook("%matplotlib inline\nimport toypkg\n!python -m toypkg.b\n"))
    found = {str(p.relative_to(pkg)) for p in package_cache.dependencies(nb, pkg)}
    assert found == {"__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/helper.py"}
    nb.write_text(notebook("print('no import')\n"))
    assert package_cache.dependencies(nb, pkg) == []
