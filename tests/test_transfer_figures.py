"""Chapter 2.2 and 2.4's shared pre-training (mapping.experiments.omniglot_backbone.pretrained) and their figures (the
figure functions of mapping.experiments.{transfer_omniglot, moons, digits_da, combine}): the column's width, text
of at least 8 pt, legends off the data, and a sparse live sweep never joined by a line."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from mapping import memo, plot  # noqa: E402
from mapping.experiments import combine as co  # noqa: E402
from mapping.experiments import digits_da as da  # noqa: E402
from mapping.experiments import moons as mo  # noqa: E402
from mapping.experiments import transfer_omniglot as to  # noqa: E402
from mapping.experiments import omniglot_backbone as ob  # noqa: E402
from test_transfer_inductive import templated_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _close():
    yield
    matplotlib.pyplot.close("all")


def test_pretrained_is_computed_once_and_equals_pretrain(fake_cache, monkeypatch):
    torch.set_num_threads(1)
    split = templated_split(6, seed=0)
    calls = []
    real = ob.pretrain
    monkeypatch.setattr(ob, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = ob.pretrained(split, 1, drawers=10, batch=16, hidden=8, seed=0)
    again = ob.pretrained(split, 1, drawers=10, batch=16, hidden=8, seed=0)
    assert len(calls) == 1 and first[2] > 0 and again[2] == pytest.approx(first[2])
    state, val = real(split, 1, drawers=10, batch=16, hidden=8, seed=0)
    assert state.keys() == again[0].keys() and all(torch.equal(state[n], again[0][n]) for n in state)
    assert val == pytest.approx(again[1])
    ob.pretrained(split, 1, drawers=10, batch=16, hidden=8, seed=1)  # another seed: computed
    ob.pretrained(templated_split(6, seed=1), 1, drawers=10, batch=16, hidden=8, seed=0)  # other images
    assert len(calls) == 3 and ob.fingerprint(split) != ob.fingerprint(templated_split(6, seed=1))
    assert memo.path("omniglot-pretrain", {"x": 1}).parent.is_dir()


def test_quick_pages_share_one_pretraining():
    """2.2's seed-0 backbone and 2.4's inductive start are the same computation in the book's quick mode."""
    transfer, combine = to.TransferConfig.for_mode("quick"), co.CombineConfig.for_mode("quick")
    for a, b in (("pretrain_epochs", "pretrain_epochs"), ("pretrain_drawers", "pretrain_drawers"),
                 ("batch", "batch"), ("pretrain_lr", "pretrain_lr"), ("hidden", "hidden")):
        assert getattr(transfer, a) == getattr(combine, b), a
    assert combine.background_characters is None and set(combine.seeds) <= set(transfer.seeds)


def legible(fig) -> None:
    plot.check_legible(fig)
    assert fig.get_figwidth() <= plot.COLUMN_INCHES and fig.legends, "a legend under the panels"


def test_moons_sweep_figure_never_joins_live_points():
    stored = {f"moons/{a:g}/{m}/acc": 90.0 - a / 2 for a in (10, 20, 60, 70, 90) for m in mo.METHODS}
    stored.update({f"moons/{a:g}/dann/gap_closed": 0.8 for a in (20, 60)})  # missing at 10, 70, 90
    live = {f"moons/{a:g}/{m}/acc": 80.0 for a in (10.0, 90.0) for m in mo.METHODS}
    fig = mo.sweep_figure([("stored", stored, (10, 20, 60, 70, 90), False), ("live", live, (10.0, 90.0), True)])
    legible(fig)
    acc_ax, gap_ax = fig.axes
    lines = acc_ax.get_lines()
    assert [line.get_linestyle() for line in lines] == ["-"] * 3 + ["None"] * 3
    gap = gap_ax.get_lines()[0].get_ydata()
    assert math.isnan(gap[0]) and math.isnan(gap[3]) and gap[1] == pytest.approx(80)


def test_inductive_figure_has_its_legend_off_the_axes():
    metrics = {f"inductive/{m}/k{k}/{s}": v for m in to.LABELS for k in (1, 5) for s, v in (("acc", 50.0),
                                                                                            ("ci95", 3.0))}
    fig = to.inductive_figure([("stored", metrics, (1, 5), False), ("live", metrics, (1, 5), True)])
    legible(fig)
    assert fig.axes[0].get_legend() is None and len(fig.legends[0].get_texts()) == 5


def test_feature_figure_draws_crosses_larger_than_dots():
    g = torch.Generator().manual_seed(0)
    views = {m: (torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g)) for m in ("source_only", "mmd")}
    fig = da.feature_figure(views, torch.arange(40) % 10, {"source_only": 98.0, "mmd": 60.0}, "title")
    legible(fig)
    dots, crosses = fig.axes[0].collections
    assert crosses.get_sizes()[0] >= 2 * dots.get_sizes()[0] and dots.get_alpha() < 1
    assert "60%" in fig.axes[1].get_title()


def test_combine_figures_fit_the_column():
    metrics = {f"combine/{s}/5w1s/ep{e}/{k}": 50.0 + e / 10 for s in co.STARTS for e in (0, 50) for k in ("acc",
                                                                                                         "ci95")}
    legible(co.curves_figure([("stored", metrics, (0, 50), False), ("live", metrics, (0, 50), True)], ["5w1s"]))
    plot.check_legible(co.map_figure())


def test_every_method_on_the_map_is_on_its_pages():
    for idea, (_, names) in co.MAP.items():
        text = " ".join((ROOT / "book" / f"{page}.ipynb").read_text(encoding="utf-8") for page in co.MAP_PAGES[idea])
        assert not [n for n in names if n not in text], idea
    drawn = " ".join(co.MAP_TEXT.values()).replace("\n", " ")
    assert all(n.split()[0] in drawn for _, names in co.MAP.values() for n in names)
