"""benchmarks/book_build.py: a page executed as the book build executes it, timed, with its memory and cells."""
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import book_build  # noqa: E402


def test_toc_pages_are_the_notebooks_in_reading_order():
    pages = book_build.toc_pages()
    assert pages and all((ROOT / f"{p}.ipynb").is_file() for p in pages)
    assert pages.index("book/ch3/maml") < pages.index("book/ch4/maml_math")


@pytest.mark.slow
def test_one_page_recorded(tmp_path, capsys):
    assert book_build.main(["--mode", "smoke", "--pages", "book/ch3/index", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "benchmark_book_build.json").read_text())
    m = record["metrics"]
    assert 0 < m["page/book/ch3/index/cpu_seconds"] and 0 < m["page/book/ch3/index/wall_seconds"] <= \
        m["pages/wall_seconds"]
    assert 50 < m["page/book/ch3/index/peak_mib"] < 8000  # a kernel that imported torch
    cells = record["slowest_cells"]["book/ch3/index"]
    assert cells and cells == sorted(cells, key=lambda c: -c["seconds"])
    assert record["mode"] == "smoke" and "ch3/index" in capsys.readouterr().out


def test_unknown_page_is_named():
    with pytest.raises(SystemExit):
        book_build.main(["--pages", "book/ch9/none"])


def test_first_line_skips_comments():
    assert book_build.first_line("# a comment\n\nx = train(model)\n") == "x = train(model)"


@pytest.mark.slow
def test_threads_under_load_records_each_configuration(tmp_path):
    import threads_under_load
    assert threads_under_load.main(["--seconds", "0.2", "--rounds", "1", "--busy", "0", "--models", "maml",
                                    "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "benchmark_threads_load.json").read_text())["metrics"]
    assert set(m) == {f"busy0/maml/{c}/ms_per_step" for c in threads_under_load.CONFIGS}
    assert all(v > 0 for v in m.values())


def test_executed_seconds_read_from_the_build_log(tmp_path):
    log = (f"\x1b[01m{tmp_path}/book/ch1/index.ipynb: Executed notebook in 93.46 seconds [mystnb]\x1b[0m\n"
           f"{tmp_path}/book/ch3/maml.ipynb: Executed notebook in 5.1 seconds [mystnb]\n"
           "/elsewhere/x.ipynb: Executed notebook in 1.0 seconds [mystnb]\n"
           f"{tmp_path}/book/ch2/metric.ipynb: Executing notebook using local CWD [mystnb]\n")
    assert book_build.executed_seconds(log, tmp_path) == {"book/ch1/index": 93.46, "book/ch3/maml": 5.1}


def test_from_build_needs_build():
    with pytest.raises(SystemExit):
        book_build.main(["--from-build"])


def test_keep_html_needs_build(capsys):
    with pytest.raises(SystemExit):
        book_build.main(["--keep-html", "somewhere"])
    assert "--keep-html" in capsys.readouterr().err
