"""The book builds offline with no warnings: `jupyter-book build . -W -n --keep-going` (smoke mode)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_book_builds_without_warnings(tmp_path):
    jb = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
    env = {**os.environ, "MAPPING_MODE": os.environ.get("MAPPING_MODE", "smoke"), "OMP_NUM_THREADS": "1",
           "MAPPING_PROGRESS": "0"}
    proc = subprocess.run([jb, "build", str(ROOT), "-W", "-n", "--keep-going", "--path-output", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=1500)
    log = proc.stdout + proc.stderr
    warnings = [line for line in log.splitlines() if "WARNING" in line and "IPKernelApp" not in line]
    assert proc.returncode == 0 and not warnings, "\n".join(warnings) or log[-5000:]
    html = tmp_path / "_build" / "html"
    for page in ("index.html", "book/ch2/metric.html", "book/ch3/maml.html", "book/ch3/reptile.html", "book/ch4/maml_math.html",
                 "book/ch4/reptile_math.html", "book/references.html"):
        assert (html / page).is_file(), page
    maml = (html / "book/ch3/maml.html").read_text()
    assert "colab.research.google.com" in maml  # launch button
    assert "<table" in (html / "book/ch3/reptile.html").read_text()  # tables displayed as Markdown render
    assert "Finn" in (html / "book/references.html").read_text()  # {cite} resolved through references.bib
