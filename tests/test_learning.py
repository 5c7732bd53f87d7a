"""Learning curves that must improve: MAML on a smoke budget adapts, and beats the pretrained baseline."""
import json
import os

import pytest
import torch

from mapping import results
from mapping.experiments import sinusoid
from mapping.experiments.sinusoid import SinusoidConfig, curve, eval_tasks, evaluate, meta_train, tune_alpha
from mapping.reproduce import main as reproduce
from mapping.stats import mean_ci95

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    config = SinusoidConfig.for_mode("smoke", eval_tasks=300)
    maml, history = meta_train("maml", config, progress=False)
    pretrained, _ = meta_train("pretrained", config, progress=False)
    return config, maml, pretrained, history


def test_maml_meta_training_loss_decreases(trained):
    _, _, _, history = trained
    losses = [h["loss"] for h in history["train"]]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.8 * first


def test_maml_adapts_and_beats_the_pretrained_baseline(trained):
    config, maml, pretrained, _ = trained
    batch = eval_tasks(config, 10)
    maml_curve = curve("maml", maml, batch, 10)  # (tasks, 11)
    alpha = tune_alpha("pretrained", pretrained, config, 10)
    assert alpha in config.alpha_grid
    pre_curve = curve("pretrained", pretrained, batch, 10, alpha)
    gain, gain_ci = mean_ci95(maml_curve[:, 0] - maml_curve[:, 1])  # paired over the same tasks
    assert gain - gain_ci > 0, "one inner step must lower MAML's query MSE"
    adv, adv_ci = mean_ci95(pre_curve[:, 1] - maml_curve[:, 1])
    assert adv - adv_ci > 0, "after one step MAML must beat the pretrained model"
    best_pre = pre_curve.mean(0).min()
    assert maml_curve.mean(0)[1] < best_pre


def test_evaluate_reports_every_shot_and_step(trained):
    config, maml, _, _ = trained
    metrics = evaluate("maml", maml, config)
    for k in config.eval_shots:
        assert metrics[f"maml/k{k}/tuned/alpha"] in config.alpha_grid
        for s in range(config.eval_steps + 1):
            for variant in ("", "/tuned"):
                assert metrics[f"maml/k{k}{variant}/step{s}/mse"] > 0 and metrics[f"maml/k{k}{variant}/step{s}/ci95"] > 0
    # tuning on validation tasks can only help there; on the test tasks it must not be far worse
    assert metrics["maml/k10/tuned/step10/mse"] < 1.5 * metrics["maml/k10/step10/mse"]


def test_evaluate_picks_shots_and_leaves_out_tuning(trained):
    config, maml, pretrained, _ = trained
    metrics = evaluate("maml", maml, config, shots=(5,), tuned=False)
    assert "maml/k5/step1/mse" in metrics and "maml/k5/step10/diverged" in metrics
    assert not any("/k10/" in k or "/k20/" in k or "/tuned/" in k for k in metrics)
    assert metrics["maml/k5/step1/mse"] == evaluate("maml", maml, config)["maml/k5/step1/mse"]
    # the pretrained baseline is always fine-tuned at its tuned rate (the paper's protocol)
    base = evaluate("pretrained", pretrained, config, shots=(5,), tuned=False)
    assert base["pretrained/k5/tuned/alpha"] in config.alpha_grid and "pretrained/k5/step10/diverged" in base


def test_pretrained_curve_is_the_functional_loops_in_one_vmap(trained):
    import torch.nn.functional as F
    from mapping.meta import adaptation_curve, functional, params_of
    config, _, pretrained, _ = trained
    batch = eval_tasks(config, 5)
    forward, params = functional(pretrained.module), params_of(pretrained.module)
    chunked = adaptation_curve(forward, F.mse_loss, params, *batch.tensors(), steps=3, alpha=0.01, check=False,
                               execution="chunk")
    assert torch.equal(curve("pretrained", pretrained, batch, 3, 0.01, check=False), chunked)


def test_pretrained_curve_matches_a_plain_per_task_loop_in_float64(trained):
    """The vmapped curve against plain SGD on each task with autograd, one task at a time, in float64."""
    import copy
    import torch.nn.functional as F
    config, _, pretrained, _ = trained
    net = copy.deepcopy(pretrained).double()
    batch = eval_tasks(config, 5)
    sx, sy, qx, qy = (t[:12].double() for t in batch.tensors())  # 12 tasks
    expected = torch.empty(len(sx), 4, dtype=torch.float64)
    for i in range(len(sx)):
        task = copy.deepcopy(net)
        for s in range(4):
            with torch.no_grad():
                expected[i, s] = F.mse_loss(task(qx[i]), qy[i])
            grads = torch.autograd.grad(F.mse_loss(task(sx[i]), sy[i]), list(task.parameters()))
            with torch.no_grad():
                for p, g in zip(task.parameters(), grads):
                    p -= 0.01 * g
    from mapping.data import TaskBatch
    got = curve("pretrained", net, TaskBatch(sx, sy, qx, qy), 3, 0.01, check=False)  # (tasks, 4)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_trained_reads_back_what_an_earlier_page_trained(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPING_CACHE", str(tmp_path))
    config = SinusoidConfig.for_mode("smoke", iterations=20)
    first, history, cached = sinusoid.trained("metasgd", config, progress=False)
    assert not cached and len(history["train"]) > 0
    again, history2, cached2 = sinusoid.trained("metasgd", config, progress=False)
    assert cached2 and history2 == history and type(again) is type(first)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name  # weights and Meta-SGD's learned rates
    # evaluation fields do not change the key; a training field does
    assert sinusoid.trained("metasgd", SinusoidConfig.for_mode("smoke", iterations=20, eval_shots=(5,)),
                            progress=False)[2]
    assert not sinusoid.trained("metasgd", SinusoidConfig.for_mode("smoke", iterations=21), progress=False)[2]


def test_progress_names_fit_the_column():
    # tqdm's finished line: "<name>: 100%|##########| 4000/4000 [00:30<00:00, 1234.56it/s, loss=0.123]"
    assert set(sinusoid.SHORT) == set(sinusoid.METHODS)
    assert max(len(name) for name in sinusoid.SHORT.values()) + 67 <= 79


def test_reproduce_writes_results_with_provenance(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPING_CACHE", str(tmp_path / "cache"))
    assert reproduce(["sinusoid", "--mode", "smoke", "--methods", "maml", "reptile", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "sinusoid.json").read_text())
    for field in results.PROVENANCE_FIELDS + ("metrics", "config", "dirty", "date"):
        assert field in record, field
    assert record["mode"] == "smoke" and record["command"].startswith("python -m mapping.reproduce sinusoid")
    assert "maml/k5/step1/mse" in record["metrics"] and "reptile/k20/step10/ci95" in record["metrics"]
    assert record["config"]["iterations"] == SinusoidConfig.for_mode("smoke").iterations
    # the CPU defaults measured for the sinusoid (mapping.reproduce.CPU_DEFAULTS): one thread per job, a job per core
    assert record["config"]["jobs"] == min(2, os.cpu_count()) and record["config"]["threads_per_job"] == 1
    assert results.load("sinusoid", tmp_path) == record
    assert results.load("absent", tmp_path) is None
    monkeypatch.setenv("MAPPING_RESULTS", str(tmp_path))
    from mapping.figures import sinusoid_methods
    png = sinusoid_methods(tmp_path / "figure.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_results_writer_rejects_bad_records(tmp_path):
    good = {k: 1 for k in results.PROVENANCE_FIELDS} | {"name": "x", "metrics": {"a/b": 1.0}}
    results.write(good, tmp_path)
    with pytest.raises(ValueError, match="missing the provenance fields"):
        results.write({"name": "x", "metrics": {"a": 1.0}}, tmp_path)
    with pytest.raises(ValueError, match="must map a string to a finite number"):
        results.write(good | {"metrics": {"a/b": float("nan")}}, tmp_path)
    with pytest.raises(ValueError, match="non-empty dict"):
        results.write(good | {"metrics": {}}, tmp_path)


def test_budget_modes(monkeypatch):
    from mapping import budget
    monkeypatch.setenv("MAPPING_MODE", "full")
    assert budget.pick(smoke=1, quick=2, full=3) == 3
    monkeypatch.delenv("MAPPING_MODE")
    assert budget.mode() == "quick"
    monkeypatch.setenv("MAPPING_MODE", "fast")
    with pytest.raises(ValueError, match="MAPPING_MODE must be one of smoke, quick, full"):
        budget.mode()
    assert torch.get_default_dtype() == torch.float32
