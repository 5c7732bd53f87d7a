"""Records read through code that fails loudly: a missing field or metric names the key, the record's file and a
close match; every stored record in ``results/`` opens as a :class:`mapping.results.Record`, and every key builder
the book reads through finds its keys in the stored records it reads (a renamed key fails here, naming both)."""
import json

import pytest

from mapping import report, results
from mapping.experiments import (background, families, moons, multitask, omniglot_maml, omniglot_metric, omniglot_tables,
                                 recognizer, sinusoid, transfer_omniglot)

STORED = sorted(p.stem for p in results.results_dir().glob("*.json"))


@pytest.fixture
def record(tmp_path):
    """A record written to a temporary folder, read back through :func:`mapping.results.load`."""
    path = tmp_path / "toy.json"
    path.write_text(json.dumps({"name": "toy", "config": {"seeds": [0, 1]},
                                "metrics": {"maml/k5/step1/mse": 0.5, "maml/k5/step1/ci95": 0.1}}))
    return results.load("toy", tmp_path)


def test_a_missing_metric_names_the_key_the_file_and_a_close_match(record):
    assert record.metric("maml/k5/step1/mse") == 0.5
    with pytest.raises(KeyError) as err:
        record.metric("maml/k5/step1/mse2")
    message = str(err.value)
    assert "maml/k5/step1/mse2" in message and str(record.path) in message and record.path.name == "toy.json"
    assert "did you mean 'maml/k5/step1/mse'" in message
    with pytest.raises(KeyError, match="toy.json"):
        record["metrics"]["nothing/like/it"]


def test_a_missing_field_and_prefix_fail_naming_the_file(record):
    with pytest.raises(KeyError, match=r"'confg'.*toy\.json.*'config'"):
        record["confg"]
    with pytest.raises(KeyError, match=r"reptile/.*toy\.json"):
        record.metrics("reptile")
    sub = record.metrics("maml/k5")
    assert dict(sub) == {"step1/mse": 0.5, "step1/ci95": 0.1}
    with pytest.raises(KeyError, match=r"'maml/k5/step2/mse'.*toy\.json.*'maml/k5/step1/mse'"):
        sub["step2/mse"]


def test_no_record_is_none_and_stored_says_which(tmp_path):
    assert results.load("absent", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="absent"):
        results.stored("absent", tmp_path)


def test_metric_key_joins_parts_as_the_writers_did():
    assert results.metric_key("moons", 35.0, "dann", "acc") == "moons/35/dann/acc"
    assert results.metric_key("moons", 12.5, "dann", "acc") == "moons/12.5/dann/acc"
    assert results.combine_key("inductive", "5w1s", "ep0", "acc") == "combine/inductive/5w1s/ep0/acc"


@pytest.mark.parametrize("name", STORED)
def test_every_stored_record_opens_as_a_record(name):
    record = results.stored(name)
    assert isinstance(record, results.Record) and record["name"] == name
    assert isinstance(record["metrics"], results.Metrics) and record.metrics() is record["metrics"]
    key = next(iter(record["metrics"]))
    assert record.metric(key) == json.loads(record.path.read_text())["metrics"][key]


def stored_or_skip(name: str) -> results.Record:
    """The stored full run ``name``; the test is skipped, saying so, where the checkout has none."""
    record = results.load(name)
    if record is None:
        pytest.skip(f"no results/{name}.json in this checkout")
    return record


def numbers_in(table: str) -> int:
    """How many cells of a markdown table, after its first column, hold a number (not an em dash)."""
    return sum(any(c.isdigit() for c in cell) for line in table.splitlines()[2:] for cell in line.split("|")[2:-1])


def test_transfer_readers_find_their_keys_in_the_stored_run():
    rec = stored_or_skip("transfer")
    m, shots, angles = rec.metrics(), rec["config"]["omniglot"]["shots"], rec["config"]["moons"]["angles"]
    table = transfer_omniglot.shots_table(m, shots)
    assert numbers_in(table) == len(shots) * len(transfer_omniglot.LABELS)
    assert f"{m[transfer_omniglot.inductive_key('scratch', shots[0])]:.1f}" in table
    gains = transfer_omniglot.gains(m, shots)
    assert [k for k in gains] == shots and all(g == m[f"inductive/gain/k{k}/acc"] for k, (g, _) in gains.items())
    table = moons.angles_table([("stored", m)], tuple(angles))
    assert len(table.splitlines()) == 2 + len(angles) and numbers_in(table) == 2 * len(angles) + sum(
        moons.gap_closed(m, a) is not None for a in angles)
    assert all(moons.key(a, method, "acc") in m for a in angles for method in rec["config"]["moons"]["methods"])


def test_multitask_readers_find_their_keys_in_the_stored_run():
    rec = stored_or_skip("multitask")
    cfg = rec["config"]
    for metrics, methods in ((rec.metrics("mlp"), cfg["multidigits_mlp"]["methods"]),
                             (rec.metrics(), cfg["multidigits"]["methods"])):
        table = multitask.accuracy_table(metrics, methods, "stored run")
        assert numbers_in(table) == len(methods) * 2 * len(multitask.TASKS) - 2  # single has no difference
        assert all(metrics[multitask.key(m, "seconds_per_epoch")] > 0 for m in methods)
    cells = [multitask.worst(rec.metrics(), m) for m in cfg["toy"]["methods"]]
    assert all(" ± " in c for c in cells) and multitask.worst(None, "equal") == "—"
    with pytest.raises(KeyError, match="multitask.json"):
        multitask.worst(rec.metrics(), "no_such_method")


def test_combine_and_background_keys_are_in_their_stored_runs():
    rec = stored_or_skip("combine")
    cfg = rec["config"]
    for start in cfg["starts"]:
        assert rec.metric(results.combine_key(start, "seconds")) > 0
        for s in results.setting_names(cfg["settings"]):
            assert all(0 < rec.metric(results.combine_key(start, s, f"ep{e}", "acc")) <= 100
                       for e in cfg["checkpoints"])
    assert all(rec.metric(results.combine_key(s, "pretrain_seconds")) > 0 for s in ("inductive", "multitask"))
    rec = stored_or_skip("background")
    cfg = rec["config"]
    assert all(0 < rec.metric(background.data_key(n, "acc")) <= 100 for n in cfg["per_class"])
    for k in cfg["shots"]:
        gain = rec.metric(background.alphabet_key("finetune", k, "acc")) - rec.metric(
            background.alphabet_key("scratch", k, "acc"))
        assert rec.metric(background.alphabet_key("gain", k)) == pytest.approx(gain)
        assert rec.metric(background.alphabet_key("gain", k, "ci95")) > 0


def test_the_alphabets_of_the_stored_background_run_are_read_by_name():
    rec = stored_or_skip("background")
    for k in rec["config"]["shots"]:
        acc = background.alphabet_accuracies(rec.metrics(), k)
        assert len(acc) == (rec["config"]["alphabets"] or 20) and list(acc) == sorted(acc)
        name = next(iter(acc))
        assert acc[name]["finetune"] == rec.metric(f"alphabet/{name}/finetune/k{k}")
    with pytest.raises(KeyError, match="k999"):
        background.alphabet_accuracies(rec.metrics(), 999)


def test_chapter_7_tables_read_every_stored_benchmark():
    memory, steps = stored_or_skip("benchmark_maml_memory"), stored_or_skip("benchmark_compiled_steps")
    table = report.memory_table(memory)
    options = sum(len(c["options"]) for c in memory["config"]["models"].values())
    assert len(table.splitlines()) == 2 + options and table.count("| vmap | ") == len(memory["config"]["models"])
    cfg = steps["config"]
    table = report.compiled_steps_table(steps)
    assert len(table.splitlines()) == 2 + len(cfg["configurations"]) * len(cfg["threads"])
    name, t = cfg["configurations"][0], cfg["threads"][0]
    assert f"{steps.metric(report.compiled_step_key(name, t, 'speedup')):.1f}x" in table.splitlines()[2]
    benches = [(on, stored_or_skip(n)) for on, n in (("CPU", "benchmark_maml_sinusoid"),
                                                     ("GPU", "benchmark_maml_sinusoid_cuda"))]
    rows = report.implementations_table(benches).splitlines()[2:]
    assert sum(r.endswith("| 1.0x |") for r in rows) >= len(benches)  # each run's reference
    assert report.caption(memory).startswith("stored run: ") and all(
        len(line) <= 79 for line in report.caption(memory).splitlines())


@pytest.mark.parametrize("name", ["sinusoid", "sinusoid_serial"])
def test_sinusoid_key_finds_every_method_shot_and_step_of_the_stored_runs(name):
    rec = stored_or_skip(name)
    cfg = rec["config"]
    for method in cfg["methods"]:
        assert rec.metric(sinusoid.key(method, None, "train_seconds")) > 0
        for k in cfg["eval_shots"]:
            for s in range(cfg["eval_steps"] + 1):
                cell = report.metric(rec.metrics(), sinusoid.key(method, k, f"step{s}", "mse"))
                assert any(c.isdigit() for c in cell)  # a mean, or the median of a diverged step
            if method in sinusoid.TUNABLE:
                assert rec.metric(sinusoid.key(method, k, "tuned", "alpha")) in cfg["alpha_grid"]
    assert sinusoid.key("maml", 5, "step1", "mse") == "maml/k5/step1/mse"


@pytest.mark.parametrize("name", ["omniglot_metric", "omniglot_metric_siamese"])
def test_omniglot_metric_keys_and_tables_read_the_stored_runs(name):
    rec = stored_or_skip(name)
    for run in rec["config"]["runs"]:
        run_name = omniglot_metric.run_name(run["method"], run["split"])
        assert rec.metric(omniglot_metric.key(run_name, "train_seconds")) > 0
        if run["split"] == "vinyals":
            assert all(0 < rec.metric(omniglot_metric.key(run["method"], s, "acc")) <= 100
                       for s in results.setting_names(omniglot_metric.SETTINGS))
    if name == "omniglot_metric":
        headers, rows = omniglot_tables.paper_table(rec)
        assert sum(r[headers.index("stored full run")] != "—" for r in rows) >= len(rows) - 1
        assert rec.metric(omniglot_metric.key("protonet", "lake20", "error")) > 0
    else:
        headers, rows = omniglot_tables.siamese_table(rec)
        assert rows and all("±" in r[2] for r in rows)
    assert "min of training" in omniglot_tables.provenance(rec, per_run=False)


def test_omniglot_maml_keys_read_every_protocol_of_the_stored_run():
    rec = stored_or_skip("omniglot_maml")
    for run in rec["config"]["runs"]:
        setting = results.setting_name(run["n_way"], run["k_shot"])
        for _, parts in families.protocols(run):
            cell = families.accuracy_cell(rec.metrics(), omniglot_maml.key(run["method"], setting, *parts, "acc"))
            assert " ± " in cell
        assert 0 < rec.metric(omniglot_maml.key(run["method"], setting, "lake", "error")) < 100
    headers, rows = families.side_by_side(results.load("omniglot_metric"), rec, results.load("omniglot_mann"))
    assert sum(r[0] == "optimization-based" and " ± " in r[2] for r in rows) == len(rec["config"]["runs"])
    with pytest.raises(KeyError, match="omniglot_maml.json"):
        families.accuracy_cell(rec.metrics(), omniglot_maml.key("maml", "5w1s", "q99", "acc"))


def test_recognizer_key_reads_the_stored_run():
    rec = stored_or_skip("recognizer")
    assert 0 < rec.metric(recognizer.key("lake20", "error")) <= rec.metric(recognizer.key("lake20", "worst_run"))
    assert 0 < rec.metric(recognizer.key("glyphs", "acc")) <= 100 and rec.metric(recognizer.key("train_seconds")) > 0


def test_metric_key_leaves_out_absent_levels():
    assert results.metric_key("siamese", "5w5s", None, "acc") == "siamese/5w5s/acc"
    assert omniglot_maml.key("maml", "5w1s", "q5", "per_query", "acc") == "maml/5w1s/q5/per_query/acc"
    assert omniglot_maml.key("maml", "5w1s", None, None, "acc") == "maml/5w1s/acc"


def test_chapter_7_tables_read_the_stored_sinusoid_run_and_book_build():
    from mapping.experiments import sinusoid
    from mapping.report import book_pages, book_pages_table, page_key
    run = results.load("sinusoid")
    table = sinusoid.cost_table(run)
    lines = table.splitlines()
    assert len(lines) == 2 + len(run["config"]["methods"])
    maml = next(line for line in lines if line.startswith("| maml "))
    assert f"{run.metric('maml/train_seconds'):.0f}" in maml and f"{run.metric('maml/k5/step1/median'):.3f}" in maml
    broken = {**run, "metrics": {k: v for k, v in run["metrics"].items() if k != "maml/k5/step1/median"}}
    with pytest.raises(KeyError, match="maml/k5/step1/median"):
        sinusoid.cost_table(broken)
    build = results.load("benchmark_book_build")
    rows = book_pages_table(build).splitlines()[2:]
    walls = [float(r.split("|")[2]) for r in rows]
    pages = book_pages(build)
    assert len(rows) == len(pages) >= 15 and walls == sorted(walls, reverse=True)
    assert all(p.startswith("book/") and p.count("/") == 2 for p in pages)
    slowest = max(pages, key=lambda p: build.metric(page_key(p, "wall_seconds")))
    assert rows[0].split("|")[1].strip() == slowest.removeprefix("book/")


def test_digits_key_reads_the_stored_transfer_record():
    from mapping.experiments import digits_da as da
    run = results.load("transfer")
    methods = [m for m in da.METHODS if da.key(m, "acc") in run["metrics"]]
    assert len(methods) == len(da.METHODS)
    table = da.results_table(run["metrics"]).splitlines()
    assert len(table) == 2 + len(methods)
    for m in methods:
        seeds = [run.metric(da.key(m, f"seed{s}")) for s in run["config"]["digits"]["seeds"]]
        assert abs(sum(seeds) / len(seeds) - run.metric(da.key(m, "acc"))) < 1e-9
        assert f"{run.metric(da.key(m, 'acc')):.1f}" in next(line for line in table if da.LABELS[m] in line)


def test_threads_table_reads_the_stored_thread_settings():
    from mapping.report import threads_key, threads_table
    run = results.load("benchmark_threads_load")
    rows = threads_table(run).splitlines()[2:]
    assert len(rows) == len(run["config"]["configs"]) >= 5
    setting = next(iter(run["config"]["configs"]))  # the first row
    quiet = run.metric(threads_key(0, "maml", setting))
    assert rows[0].split("|")[1].strip() == setting and f"{quiet:.1f}" in rows[0]
    with pytest.raises(KeyError, match="busy9"):
        run.metric(threads_key(9, "maml", setting))


def test_mann_key_reads_the_stored_record():
    from mapping.experiments import omniglot_mann as mn
    run = results.load("omniglot_mann")
    for model in run["config"]["models"]:
        accs = [run.metric(mn.key(model, "acc", i)) for i in mn.INSTANCES]
        assert all(0 <= a <= 100 for a in accs) and run.metric(mn.key(model, "train_seconds")) > 0
    _, rows = families.side_by_side(results.load("omniglot_metric"), results.load("omniglot_maml"), run)
    mann = next(row for row in rows if row[1] == mn.LABELS["mann"])
    assert mann[2] == f"{run.metric(mn.key('mann', 'acc', 2)):.1f}"
