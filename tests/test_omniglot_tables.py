"""Chapter 2.1's tables (mapping.experiments.omniglot_tables) from small synthetic records shaped like the
stored JSON, and from the real files in results/ with no Omniglot anywhere."""
import json
import sys

import pytest

from mapping import results
from mapping.experiments import omniglot_tables as tables
from mapping.experiments.omniglot_metric import METHODS, PAPER, SETTINGS, MetricConfig
from mapping.report import fmt, markdown_table

DESCRIBED = dict(command="python -m mapping.reproduce omniglot-metric", mode="full", seed=0, device="cpu",
                 torch="2.0", commit="0123456789abcdef", dirty=False, wall_seconds=1200.0)


def run(method, split="vinyals", shot=1, episodes=100):
    return dict(method=method, split=split, train_way=20, train_shot=shot, train_query=5, episodes=episodes,
                halve_every=50, test_episodes=1000, test_query=5, hidden=64, lr=1e-3, matching_scale=20.0, seed=0)


def stored_record():
    """Like results/omniglot_metric.json: every method and setting but matching 20w5s; one mean-rule setting."""
    metrics = {}
    for i, method in enumerate(METHODS):
        for j, (n, k) in enumerate(SETTINGS):
            if (method, n, k) != ("matching", 20, 5):
                metrics[f"{method}/{n}w{k}s/acc"] = 90.0 + i + j / 4  # protonet 5w1s: 90.0, 5w5s: 90.25 ...
                metrics[f"{method}/{n}w{k}s/ci95"] = 0.25
        metrics[f"{method}/train_seconds"] = 60.0
    metrics.update({"siamese/5w5s/mean/acc": 99.0, "siamese/5w5s/mean/ci95": 0.125,
                    "protonet/lake20/error": 8.5, "protonet/background/train_seconds": 120.0})
    runs = [run(m) for m in METHODS] + [run("protonet", "background", episodes=40)]
    return {**DESCRIBED, "config": {"runs": runs}, "metrics": metrics}


def rows_by_setting(rows, method):
    return {row[1]: row for row in rows if row[0] == tables.SHORT[method]}


def test_paper_table_from_the_stored_record_alone_has_no_live_column():
    headers, rows = tables.paper_table(stored_record())
    assert headers == ["method", "setting", "paper", "stored full run", "full run - paper"]
    assert len(rows) == 3 * 4 + 1 and all(len(row) == len(headers) for row in rows)
    proto = rows_by_setting(rows, "protonet")
    assert proto["5-way 1-shot"][2:] == ["98.8", "90.0 ± 0.2", "-8.8"]  # 90.0 - 98.8
    assert proto["5-way 5-shot, 1-shot-trained model"][2:] == ["99.7", "90.2 ± 0.2", f"{90.25 - 99.7:.1f}"]
    matching = rows_by_setting(rows, "matching")
    assert matching["20-way 5-shot, 1-shot-trained model"][2:] == ["98.5", "—", "—"]  # not stored: no "nan"
    siamese = rows_by_setting(rows, "siamese")
    assert list(siamese) == ["5-way 1-shot", "5-way 5-shot, 1-shot-trained model",
                             "5-way 5-shot, 1-shot-trained model, mean rule",  # the only stored mean rule
                             "20-way 1-shot", "20-way 5-shot, 1-shot-trained model"]
    assert siamese["5-way 5-shot, 1-shot-trained model, mean rule"][2:] == ["98.4", "99.0 ± 0.1", "0.6"]
    assert rows[-1][0] == "Siamese Net"


def test_each_paper_figure_is_cited_to_its_table():
    """The Siamese figures (88.2 at 20-way 1-shot) are the MAML paper's quote of Koch et al., not Vinyals et al.'s
    re-implementation (88.0, or 88.1 fine-tuned); every method names a table."""
    assert PAPER["siamese"][2] == 88.2
    assert tables.PAPER_SOURCE["siamese"] == "Koch et al.'s method as quoted in Finn et al. 2017, Table 1"
    assert all(tables.PAPER_SOURCE[m].endswith("Table 1") for m in METHODS)
    text = tables.paper_sources()
    assert text.startswith("Paper column: ProtoNet, Snell et al. 2017, Table 1; ") and "Vinyals et al. 2016, " \
        "Table 1; Siamese Net, Koch et al.'s method as quoted in Finn et al. 2017, Table 1." in text


def test_paper_table_training_shots_come_from_each_run():
    stored = stored_record()
    stored["config"]["runs"][0]["train_shot"] = 5  # the stored ProtoNet trained on 5-shot episodes
    _, rows = tables.paper_table(stored)
    assert list(rows_by_setting(rows, "protonet")) == ["5-way 1-shot, 5-shot-trained model", "5-way 5-shot",
                                                       "20-way 1-shot, 5-shot-trained model", "20-way 5-shot"]
    configs = {m: MetricConfig(method=m, train_shot=1, episodes=30, test_episodes=20) for m in METHODS}
    _, rows = tables.paper_table(stored, {}, configs, "smoke")
    assert list(rows_by_setting(rows, "protonet"))[:2] == [
        "5-way 1-shot, 5-shot-trained model (stored run)", "5-way 5-shot, 1-shot-trained model (live run)"]
    assert "1-shot-trained model (live run)" not in "".join(rows_by_setting(rows, "matching"))  # they agree


def test_paper_table_with_a_live_run():
    configs = {m: MetricConfig(method=m, episodes=30, test_episodes=20) for m in METHODS}
    live = {"protonet/5w1s/acc": 50.0, "protonet/5w1s/ci95": 2.0, "siamese/20w5s/mean/acc": 40.0,
            "siamese/20w5s/mean/ci95": 1.0}
    headers, rows = tables.paper_table(None, live, configs, "smoke")
    assert headers[3] == "live (smoke: 30 episodes, 20 test episodes)"
    assert rows_by_setting(rows, "protonet")["5-way 1-shot"][2:] == ["98.8", "50.0 ± 2.0", "—", "—"]
    siamese = rows_by_setting(rows, "siamese")
    assert siamese["20-way 5-shot, 1-shot-trained model, mean rule"][2:] == ["97.0", "40.0 ± 1.0", "—", "—"]
    assert "5-way 5-shot, 1-shot-trained model, mean rule" not in siamese  # in neither run
    _, rows = tables.paper_table(stored_record(), {}, configs)
    row = rows_by_setting(rows, "siamese")["5-way 5-shot, 1-shot-trained model, mean rule"]
    assert row[3:] == ["—", "99.0 ± 0.1", "0.6"]  # stored only: the live cell is a dash


def test_siamese_table():
    record = stored_record()
    record["metrics"]["siamese/episodes"] = 9000
    headers, rows = tables.siamese_table(record)
    assert headers == ["setting", "paper (Finn et al. 2017, Table 1)", "9000 episodes", "run - paper"]
    assert [row[0] for row in rows] == ["5-way 1-shot", "5-way 5-shot, 1-shot-trained model",
                                        "5-way 5-shot, 1-shot-trained model, mean rule", "20-way 1-shot",
                                        "20-way 5-shot, 1-shot-trained model"]
    assert rows[0][1:] == ["97.3", "92.0 ± 0.2", f"{92.0 - PAPER['siamese'][0]:.1f}"]
    assert rows[2][1:] == ["98.4", "99.0 ± 0.1", "0.6"]


def test_lake_table_states_koch_et_al_s_split_and_adds_runs_only_when_given():
    headers, rows = tables.lake_table()
    assert headers == ["model", "error (%)", "source"]
    assert [row[1] for row in rows] == ["4.5", "3.3", "8.0", "13.5", "38.8"]
    assert {row[2] for row in rows} == {"Lake et al. 2015"}
    assert rows[2][0] == "Siamese convnet (Koch et al.: trained on another split, with affine distortions, " \
                         "105x105 images)"
    _, rows = tables.lake_table(stored_record(), 7.25, "this page, smoke run (30 episodes)")
    assert rows[5:] == [["ProtoNet, background set, 28x28 images", "7.2", "this page, smoke run (30 episodes)"],
                        ["ProtoNet, background set, 28x28 images", "8.5", "stored full run"]]  # no minimal run


def test_sweep_table_and_curve():
    config = dict(method="matching", split="vinyals", train_way=20, train_shot=1, episodes=200, halve_every=70,
                  matching_scale=20.0)
    background = dict(config, method="protonet", split="background", train_way=60, episodes=100)
    records = [{"name": "m20w1", "episode": 100, "20w1s": 80.0, "5w1s": 90.0, "config": config},
               {"name": "m20w1", "episode": 200, "20w1s": 85.0, "5w1s": 95.0, "config": config},
               {"name": "m20w1", "episode": 200, "config": config,
                "final": {"matching/5w1s/acc": 96.04, "matching/5w5s/acc": 99.0, "matching/20w1s/acc": 88.96}},
               {"name": "b60w1", "episode": 50, "lake20": 20.0, "config": background},
               {"name": "b60w1", "episode": 100, "lake20": 9.25, "config": background}]
    headers, rows = tables.sweep_table(records)
    assert headers == ["method, training episodes", "episodes", "lr halved every", "5w1s", "5w5s", "20w1s",
                       "20w5s"]
    assert rows == [["Matching Net, 20-way 1-shot, scale 20", 200, 70, "96.0", "99.0", "89.0", "—"]]
    headers, rows = tables.sweep_table(records, "background")
    assert headers[3:] == ["Lake's 20 runs, error (%)"]
    assert rows == [["ProtoNet, 60-way 1-shot", 100, 70, "9.2"]]  # its last evaluation only
    with pytest.raises(ValueError, match="split must be"):
        tables.sweep_table(records, "minimal")
    assert tables.sweep_curve(records, "m20w1") == ([100, 200], [80.0, 85.0], config)
    assert tables.sweep_curve(records, "p60w1") is None
    assert tables.sweep_table([], "background") == (headers, [])


def test_provenance_lines():
    assert tables.provenance(None) == "stored full run: none in this checkout"
    text = tables.provenance(stored_record())
    lines = text.splitlines()
    assert lines[0].startswith("stored full run: python -m mapping.reproduce omniglot-metric (mode full")
    assert all(len(line) <= 79 for line in lines)
    assert "  protonet/background: 20-way 1-shot, 40 episodes," in lines
    assert "    2.0 min of training (3.00 s per episode)" in lines
    total = tables.provenance(stored_record(), "stored run", per_run=False)
    assert total.startswith("stored run: ") and total.endswith("\n  5.0 min of training")  # 3 x 60 s + 120 s


def test_stored_tables_build_from_results_without_omniglot(tmp_path, monkeypatch):
    """The sections that need only results/*.json: no data folder, no cache, every Omniglot file refused."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    cache.mkdir()
    monkeypatch.setenv("MAPPING_DATA", str(data))
    monkeypatch.setenv("MAPPING_CACHE", str(cache))
    monkeypatch.setenv("MAPPING_DOWNLOAD", "0")
    monkeypatch.delenv("MAPPING_RESULTS", raising=False)

    def refuse(name, *args, **kwargs):
        raise AssertionError(f"a stored table asked for Omniglot's {name}")
    for module in [m for name, m in sys.modules.items() if name.startswith("mapping")]:
        if hasattr(module, "omniglot_file"):
            monkeypatch.setattr(module, "omniglot_file", refuse)

    stored, longer = results.load("omniglot_metric"), results.load("omniglot_metric_siamese")
    sweep = tables.load_sweep()
    assert stored and longer and sweep, "the stored results are part of the repository"
    headers, rows = tables.paper_table(stored)
    assert "stored full run" in headers and not any(h.startswith("live") for h in headers)
    assert rows_by_setting(rows, "protonet")["5-way 1-shot"][3] == fmt(
        stored["metrics"]["protonet/5w1s/acc"], stored["metrics"]["protonet/5w1s/ci95"], 1)
    assert "—" not in [cell for row in rows for cell in row[3:]]  # every setting stored
    text = "\n".join([markdown_table(*tables.paper_table(stored)), markdown_table(*tables.siamese_table(longer)),
                      markdown_table(*tables.lake_table(stored)), markdown_table(*tables.sweep_table(sweep)),
                      markdown_table(*tables.sweep_table(sweep, "background")), tables.paper_sources(),
                      tables.provenance(stored), tables.provenance(longer, "stored run", per_run=False)])
    for caveat in ("1-shot-trained model", "as quoted in Finn et al. 2017, Table 1",
                   "paper (Finn et al. 2017, Table 1)", "Koch et al.: trained on another split",
                   "mean rule", "Lake's 20 runs, error (%)", "stored full run", "min of training"):
        assert caveat in text, caveat
    assert list(data.iterdir()) == [] and list(cache.rglob("*.pt")) == []
    json.dumps(rows)  # plain cells: strings and numbers
    for headers, rows in (tables.paper_table(stored, {}, None, "quick"), tables.sweep_table(sweep),
                          tables.sweep_table(sweep, "background"), tables.siamese_table(longer)):
        assert len(headers) <= 7, headers  # the book's 688-px column: no sideways scrolling
        assert max(len(str(cell)) for row in rows for cell in row) <= 46


def test_sweep_value_interpolates_along_one_configuration():
    config = dict(method="protonet", split="vinyals", train_way=60, train_shot=1, episodes=300, halve_every=100)
    records = [{"name": "p", "episode": 100, "20w1s": 80.0, "config": config},
               {"name": "p", "episode": 300, "20w1s": 90.0, "config": config},
               {"name": "q", "episode": 100, "20w1s": 50.0, "config": config},
               {"name": "b", "episode": 50, "lake20": 20.0, "config": config}]
    assert tables.sweep_value(records, "p", 100) == 80.0
    assert tables.sweep_value(records, "p", 250) == pytest.approx(87.5)
    assert tables.sweep_value(records, "b", 50, "lake20") == 20.0
    for name, episode in (("p", 99), ("p", 301), ("z", 100)):
        with pytest.raises(ValueError, match="outside"):
            tables.sweep_value(records, name, episode)
