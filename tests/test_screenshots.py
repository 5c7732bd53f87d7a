"""benchmarks/screenshots.py: its spec lines, and a missing build named before any browser starts."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import screenshots  # noqa: E402


def test_spec_lines_give_name_page_and_place(tmp_path):
    spec = tmp_path / "spec.txt"
    spec.write_text("# a comment\n\nfig-1 | book/ch3/maml | img:2\n"
                    "eq | book/ch4/reptile_math | eq:AvgGradInner  # why\n"
                    "words | book/intro | text:Who this book is for | and after\n", encoding="utf-8")
    assert screenshots.read_spec(spec) == [("fig-1", "book/ch3/maml", "img", "2"),
                                           ("eq", "book/ch4/reptile_math", "eq", "AvgGradInner"),
                                           ("words", "book/intro", "text", "Who this book is for | and after")]


def test_missing_build_is_named(tmp_path, capsys):
    spec = tmp_path / "spec.txt"
    spec.write_text("a | index | top\n")
    with pytest.raises(SystemExit):
        screenshots.main(["--spec", str(spec), "--html", str(tmp_path / "nowhere")])
    assert "no built book" in capsys.readouterr().err
