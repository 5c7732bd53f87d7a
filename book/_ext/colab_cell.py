"""The first code cell of every notebook: on Colab, install ``mapping`` when it is missing; elsewhere, nothing.

Colab's runtime brings its own Python (3.13 now) and torch; the package's requirements are ranges, so pip keeps
Colab's torch and installs only what is missing. The repository is cloned (not only the package installed) because
the pages read the stored runs under ``results/``. ``MAPPING_COLAB=1`` forces the Colab branch, and
``MAPPING_REPO`` / ``MAPPING_CLONE`` point it at another source and folder: ``tests/test_colab_cell.py`` runs the cell
so, installing from this checkout into a fresh virtual environment. ``python book/_ext/colab_cell.py`` writes
:data:`CELL` into every notebook under ``book/``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

CELL = '''\
# On Colab: install `mapping` from the book's repository when it is
# missing (elsewhere, or once it is installed, this cell does nothing).
import importlib.util, os, subprocess, sys
colab = "google.colab" in sys.modules or os.environ.get("MAPPING_COLAB") == "1"
if colab and importlib.util.find_spec("mapping") is None:
    repo = os.environ.get("MAPPING_REPO",
                          "https://github.com/mapping-book/mapping")
    where = os.environ.get("MAPPING_CLONE", "/content/mapping")
    if not os.path.isdir(where):
        subprocess.run(["git", "clone", "-q", "--depth", "1", repo, where],
                       check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e",
                    where], check=True)
    sys.path.insert(0, where)  # this kernel started before the install
    print("installed mapping from", repo)'''


def write(notebooks: list[Path]) -> list[Path]:
    """Make :data:`CELL` the first code cell of each notebook (tagged ``remove-output``); the changed ones."""
    changed = []
    for path in notebooks:
        nb = json.loads(path.read_text())
        cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
        if "".join(cell["source"]) != CELL:
            cell["source"] = CELL.splitlines(keepends=True)
            cell.setdefault("metadata", {})["tags"] = ["remove-output"]
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(path)
    return changed


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    for path in write(sorted((root / "book").rglob("*.ipynb"))):
        print("wrote", path.relative_to(root))
    sys.exit(0)
