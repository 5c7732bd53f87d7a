"""The Omniglot metric-based experiment end to end on the real files (skipped without $MAPPING_DATA)."""
import json
import os
from pathlib import Path

import pytest

from mapping import results
from mapping.reproduce import main as reproduce

DATA = Path(os.environ.get("MAPPING_DATA", "/nonexistent")) / "omniglot"
needs_data = pytest.mark.skipif(not (DATA / "images_background.zip").is_file(),
                                reason="set MAPPING_DATA to a folder with omniglot/images_background.zip")


@needs_data
@pytest.mark.slow
def test_reproduce_omniglot_metric_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPING_CACHE", os.environ.get("MAPPING_CACHE", str(tmp_path / "cache")))
    assert reproduce(["omniglot-metric", "--mode", "smoke", "--out", str(tmp_path), "--no-resume"]) == 0
    record = json.loads((tmp_path / "omniglot_metric.json").read_text())
    for field in results.PROVENANCE_FIELDS:
        assert field in record
    metrics = record["metrics"]
    for method in ("protonet", "matching", "siamese"):
        for setting in ("5w1s", "5w5s", "20w1s", "20w5s"):
            acc, ci = metrics[f"{method}/{setting}/acc"], metrics[f"{method}/{setting}/ci95"]
            assert 0 <= acc <= 100 and ci > 0
    # even 30 smoke episodes put ProtoNets well above chance on unseen characters
    assert metrics["protonet/5w1s/acc"] > 40 and metrics["protonet/20w1s/acc"] > 15
    assert 0 <= metrics["protonet/lake20/error"] < 95 and 0 <= metrics["protonet/minimal/lake20/error"] <= 100


@needs_data
@pytest.mark.slow
def test_parallel_jobs_give_the_same_metrics(tmp_path, monkeypatch):
    """--jobs 2 trains configs in worker processes; each run is seeded by its config, so nothing changes."""
    monkeypatch.setenv("MAPPING_CACHE", os.environ.get("MAPPING_CACHE", str(tmp_path / "cache")))
    records = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        assert reproduce(["omniglot-metric", "--mode", "smoke", "--methods", "protonet", "--out", str(out),
                          "--no-resume", "--threads", "1", "--jobs", str(jobs)]) == 0
        records[jobs] = json.loads((out / "omniglot_metric.json").read_text())
    assert records[2]["config"]["jobs"] == 2 and records[2]["config"]["threads_per_job"] == 1

    def science(record):  # everything but the wall times
        return {k: v for k, v in record["metrics"].items() if not k.endswith("_seconds")}
    assert science(records[1]) == science(records[2])
    assert {"protonet/5w1s/acc", "protonet/lake20/error", "protonet/minimal/lake20/error"} <= set(science(records[2]))


def test_jobs_must_be_a_positive_int():
    from mapping.experiments.omniglot_metric import run
    with pytest.raises(ValueError, match="jobs must be a positive int"):
        run([], jobs=0)


@needs_data
def test_budget_overrides_and_record_name(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPING_CACHE", os.environ.get("MAPPING_CACHE", str(tmp_path / "cache")))
    assert reproduce(["omniglot-metric", "--mode", "smoke", "--methods", "siamese", "--episodes", "3",
                      "--halve-every", "2", "--name", "omniglot_metric_siamese", "--out", str(tmp_path),
                      "--no-resume"]) == 0
    record = json.loads((tmp_path / "omniglot_metric_siamese.json").read_text())
    assert record["name"] == "omniglot_metric_siamese"
    assert [(r["method"], r["episodes"], r["halve_every"]) for r in record["config"]["runs"]] == [("siamese", 3, 2)]
    assert record["metrics"]["siamese/episodes"] == 3 and "siamese/20w5s/mean/acc" in record["metrics"]


@pytest.mark.parametrize("argv, match", [(["sinusoid", "--episodes", "5"], "--episodes"),
                                         (["omniglot-metric", "--halve-every", "0"], "--halve-every"),
                                         (["omniglot-metric", "--name", "../x"], "--name")])
def test_bad_reproduce_arguments(argv, match, capsys):
    with pytest.raises(SystemExit):
        reproduce(argv)
    assert match in capsys.readouterr().err


def test_one_embedding_table_serves_every_setting(fake_root, fake_cache, monkeypatch):
    """evaluate and shot_curve embed the test split once per model, with the same episodes and accuracies as
    embedding it for each setting."""
    import torch

    from mapping.data import vinyals_split
    from mapping.experiments import omniglot_metric as om
    data = vinyals_split(fake_root, train=4, strict=False)  # 20 test characters, for the 20-way settings
    config = om.MetricConfig.for_mode("protonet", mode="smoke", episodes=2, test_episodes=4)
    model, _ = om.fit(config, data, progress=False)
    calls = []
    real_embed = om.embed_all
    monkeypatch.setattr(om, "embed_all", lambda *a, **k: calls.append(1) or real_embed(*a, **k))
    metrics = om.evaluate(model, config, data)
    assert len(calls) == 1 and len(metrics) == 2 * len(om.SETTINGS)
    for n, k in om.SETTINGS:  # each setting alone, embedding the split itself
        g = torch.Generator().manual_seed(config.seed + 1000 * n + k)
        alone = om.accuracy(model, data["test"].sampler(n, k, config.test_query), config.test_episodes, g)
        assert abs(100 * alone.mean().item() - metrics[f"protonet/{n}w{k}s/acc"]) < 1e-9
    calls.clear()
    curve = om.shot_curve(model, data["test"], shots=(1, 2), n_way=3, episodes=4)
    assert len(calls) == 1 and len(curve) == 2 and all(0 <= a <= 100 for a in curve)
    slow = [100 * om.accuracy(model, data["test"].sampler(3, k, 5), 4, torch.Generator().manual_seed(k),
                              precompute=False).mean().item() for k in (1, 2)]
    assert curve == pytest.approx(slow, abs=1e-6)  # precomputed or not: the same episodes, the same answers
    with pytest.raises(ValueError, match="embedded must be"):
        om.accuracy(model, data["test"].sampler(3, 1, 5), 2, torch.Generator(), embedded=torch.zeros(2, 2, 8))
