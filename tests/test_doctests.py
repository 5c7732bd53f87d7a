"""The package's docstring examples run, as TorchJD runs its documentation's: every ``>>>`` in ``mapping``."""
import doctest
import importlib
import pkgutil

import pytest

import mapping

MODULES = sorted(m.name for m in pkgutil.walk_packages(mapping.__path__, "mapping.")
                 if not m.name.startswith("mapping.reproduce"))


def examples(name: str) -> list[doctest.DocTest]:
    return [t for t in doctest.DocTestFinder(exclude_empty=True).find(importlib.import_module(name)) if t.examples]


@pytest.mark.parametrize("name", [n for n in MODULES if examples(n)])
def test_docstring_examples_run(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in examples(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see above)"


def test_the_learners_have_examples():
    have = {n for n in MODULES if examples(n)}
    assert {"mapping.meta.maml", "mapping.meta.reptile", "mapping.nn.norms"} <= have


def test_examples_fit_the_books_column():
    """The examples render on the API pages inside a class's indented body: no line wider than 60 characters
    (at 79 the browser test found the block scrolling)."""
    wide = [f"{n}: {line}" for n in MODULES for t in examples(n) for e in t.examples
            for line in (">>> " + e.source).splitlines() + e.want.splitlines() if len(line) > 60]
    assert not wide, wide
