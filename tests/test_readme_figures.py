"""The README's figures are its records': every time in the table of full runs and every build figure is checked
against the JSON record it names, so that a rerun that moves a number fails here instead of leaving the README
wrong."""
import re
import shlex
from pathlib import Path

import pytest

from mapping import results

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
VALUED = {"--out", "--tllib-source"}  # where a run wrote or read its inputs, not what it ran
FLAGS = {"--no-resume"}


def record(name: str) -> results.Record:
    """The record the README names, read through :func:`mapping.results.load`: a missing metric or field fails
    naming the key and the file."""
    rec = results.load(name, ROOT / "results")
    assert rec is not None, f"the README names results/{name}.json, which is not stored"
    return rec


def rows() -> list[tuple[str, str, str]]:
    """(command, record name, time column) of each row of the full-runs table that names a JSON record."""
    found = []
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and (m := re.search(r"`results/(\w+)\.json`", cells[1])):
            found.append((cells[0].strip("`"), m.group(1), cells[2]))
    return found


def tokens(command: str) -> set[str]:
    words = [w for w in shlex.split(command) if not w.startswith("MAPPING_COMMIT=")]
    drop = {j for i, w in enumerate(words) if w in VALUED for j in (i, i + 1)}
    drop |= {i for i, w in enumerate(words) if w in FLAGS}
    return {w for i, w in enumerate(words) if i not in drop}


def matches(shown: str, values: list[float]) -> bool:
    """``shown`` (as printed, e.g. "6.4") is one of ``values`` rounded to the digits it shows."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return any(abs(float(shown) - v) <= 0.5 * 10 ** -decimals + 1e-9 for v in values)


def test_the_table_has_its_rows():
    assert len(rows()) >= 15


@pytest.mark.parametrize("command, name, time", rows(), ids=[r[1] for r in rows()])
def test_full_run_row_matches_its_record(command, name, time):
    rec = record(name)
    assert rec["name"] == name, f"results/{name}.json holds a record named {rec['name']!r}"
    missing = tokens(command) - tokens(rec["command"])
    assert not missing, f"{name}: the README's command has {sorted(missing)}, the record ran {rec['command']!r}"
    seconds = [rec["wall_seconds"]] + [v for k, v in rec["metrics"].items() if k.endswith("_seconds")]
    shown_min = re.findall(r"(\d+(?:\.\d+)?) min\b", time)
    shown_s = re.findall(r"(\d+(?:\.\d+)?) s\b", time)
    assert shown_min or shown_s, f"{name}: no time in {time!r}"
    for shown in shown_min:
        assert matches(shown, [s / 60 for s in seconds]), f"{name}: {shown} min is none of the record's times"
    for shown in shown_s:
        assert matches(shown, seconds), f"{name}: {shown} s is none of the record's times"


def test_build_figures_match_the_book_build_record():
    m = record("benchmark_book_build")["metrics"]
    section = README.split("## Build the book", 1)[1].split("## Run every test", 1)[0]
    figure = lambda label: re.search(rf"\*\*([\d.]+) {label}\*\*", section).group(1)  # noqa: E731
    assert matches(figure("minutes"), [m["build/wall_seconds"] / 60])
    assert matches(figure("s"), [m["pages/max_wall_seconds"]])
    assert matches(figure("GiB"), [m["build/peak_mib"] / 1024])
    assert re.search(rf"\*\*{m['disk/venv_mib'] / 1024:.1f} GiB\*\* for the virtual", section)
    assert matches(re.search(r"\*\*([\d.]+) MiB\*\* of Omniglot", section).group(1), [m["disk/data_mib"]])
    assert matches(re.search(r"\*\*([\d.]+) MiB\*\* in `\$MAPPING_CACHE`", section).group(1), [m["disk/cache_mib"]])
    assert matches(re.search(r"\*\*([\d.]+) MiB\*\* of HTML", section).group(1), [m["build/html_mib"]])
    assert record("benchmark_book_build")["mode"] == "quick" and not record("benchmark_book_build")["dirty"]
