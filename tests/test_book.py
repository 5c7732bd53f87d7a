"""The book builds offline with no warnings: `jupyter-book build . -W -n --keep-going` (smoke mode).

The build is the session fixture ``built_book`` (tests/conftest.py): every test of the built HTML shares it,
in one xdist group, so a test run builds the book once.
"""
import re

import pytest


@pytest.mark.slow
@pytest.mark.xdist_group("book")
def test_book_builds_without_warnings(built_book):
    html = built_book
    for page in ("index.html", "book/ch1/index.html", "book/ch2/metric.html", "book/ch2/transfer.html",
                 "book/ch2/relations.html", "book/ch2/multitask.html", "book/ch2/multitask_weighting.html",
                 "book/ch2/multitask_aggregation.html", "book/ch2/multitask_experiments.html", "book/ch3/maml.html", "book/ch3/reptile.html",
                 "book/ch4/maml_math.html", "book/ch4/reptile_math.html", "book/references.html"):
        assert (html / page).is_file(), page
    maml = (html / "book/ch3/maml.html").read_text()
    assert "colab.research.google.com" in maml  # launch button
    assert "<table" in (html / "book/ch3/reptile.html").read_text()  # tables displayed as Markdown render
    references = (html / "book/references.html").read_text()
    assert "Finn et al., 2017" in references and "FAL17" not in references  # labels read like the citations


@pytest.mark.slow
@pytest.mark.xdist_group("book")
def test_progress_bars_show_once_as_text(built_book):
    text = re.sub(r"<[^>]+>", "", (built_book / "book/ch3/maml.html").read_text())
    finals = re.findall(r"^MAML: 100%\|", text, re.M)
    assert len(finals) == 1 and not re.search(r"^MAML: +\d{1,2}%\|", text, re.M)
