"""The multi-task experiment and its reproduce command: every method trains, learns, and is recorded."""
import json

import pytest
import torch

from mapping import reproduce
from mapping.experiments import multitask as mt


def test_every_method_learns_both_digits_above_chance_on_a_small_budget():
    torch.set_num_threads(1)
    config = mt.MultitaskConfig(epochs=2, batch=50, train_pairs=1_000, test_pairs=400, hidden=64, seeds=(0, 1))
    metrics = mt.run_multidigits(config)
    for method in mt.METHODS:
        for task in mt.TASKS:
            assert metrics[f"{method}/{task}/acc"] > 20, (method, task)  # chance: 10%
            seeds = [metrics[f"{method}/{task}/seed{s}"] for s in config.seeds]
            assert metrics[f"{method}/{task}/acc"] == pytest.approx(sum(seeds) / 2)
        assert metrics[f"{method}/seconds_per_epoch"] > 0
    assert mt.METHODS[int(metrics["best/method_index"])] != "single"


def test_t_interval_matches_the_student_quantile():
    mean, half = mt.t_ci95(torch.tensor([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / 3 ** 0.5, rel=1e-6)


def test_reproduce_multitask_writes_a_record(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPING_CACHE", str(tmp_path / "cache"))
    assert reproduce.main(["multitask", "--mode", "smoke", "--methods", "hard", "pcgrad", "--out",
                           str(tmp_path)]) == 0
    record = json.loads((tmp_path / "multitask.json").read_text())
    assert record["mode"] == "smoke" and record["config"]["multidigits"]["methods"] == ["hard", "pcgrad"]
    assert {"hard/left/acc", "pcgrad/right/ci95", "toy/gradnorm/worst"} <= set(record["metrics"])
    assert set(record["curves"]["toy"]) == {"equal", "uncertainty", "gradnorm"}
