"""The multi-task experiment and its reproduce command: every method trains, learns, and is recorded."""
import json

import pytest
import torch

from mapping import reproduce
from mapping.experiments import multitask as mt


@pytest.mark.parametrize("trunk", mt.TRUNKS)
def test_every_method_learns_both_digits_above_chance_on_a_small_budget(trunk):
    torch.set_num_threads(1)
    config = mt.MultitaskConfig(epochs=2 if trunk == "mlp" else 4, batch=50, train_pairs=1_000, test_pairs=400, hidden=64, seeds=(0, 1),
                                trunk=trunk, filters=16)
    metrics = mt.run_multidigits(config)
    for method in mt.METHODS:
        for task in mt.TASKS:
            assert metrics[f"{method}/{task}/acc"] > 20, (method, task)  # chance: 10%
            seeds = [metrics[f"{method}/{task}/seed{s}"] for s in config.seeds]
            assert metrics[f"{method}/{task}/acc"] == pytest.approx(sum(seeds) / 2)
            if method != "single":  # paired by seed against the single-task models
                single = [metrics[f"single/{task}/seed{s}"] for s in config.seeds]
                gain = sum(a - b for a, b in zip(seeds, single)) / 2
                assert metrics[f"{method}/{task}/gain"] == pytest.approx(gain)
        assert metrics[f"{method}/seconds_per_epoch"] > 0
    best = mt.METHODS[int(metrics["best/method_index"])]
    assert best in mt.ONE_TRUNK
    assert metrics["best/left/gain"] == metrics[f"{best}/left/gain"]


def test_conv_trunk_networks_share_what_their_method_says():
    torch.manual_seed(0)
    x = torch.rand(5, 1, 12, 12)  # (N, 1, 12, 12)
    for method in mt.ARCHITECTURES:
        model = mt.build(method, 144, 32, 10, trunk="conv", filters=4)
        out = model(x)
        assert set(out) == set(mt.TASKS) and all(o.shape == (5, 10) for o in out.values())
    hard = mt.build("hard", 144, 32, 10, trunk="conv", filters=4)
    convs = [m for m in hard.trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 and all(c.out_channels == 4 for c in convs)
    assert mt.last_shared_layer(hard) == list(hard.trunk[-1][0].parameters())  # the dense layer: GradNorm's W


def test_gradnorm_layer_of_the_mlp_trunk_is_its_last_linear():
    hard = mt.build("hard", 144, 32, 10, trunk="mlp")
    linears = [m for m in hard.trunk.modules() if isinstance(m, torch.nn.Linear)]
    assert mt.last_shared_layer(hard) == list(linears[-1].parameters())


@pytest.mark.parametrize("kwargs", [{"trunk": "resnet"}, {"trunk": None}])
def test_unknown_trunk_is_refused_by_name(kwargs):
    with pytest.raises(ValueError, match="trunk must be one of"):
        mt.MultitaskConfig(**kwargs)
    with pytest.raises(ValueError, match="trunk must be one of"):
        mt.build("hard", 144, 32, 10, trunk=kwargs["trunk"])


def test_reproduce_multitask_writes_a_record(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPING_CACHE", str(tmp_path / "cache"))
    assert reproduce.main(["multitask", "--mode", "smoke", "--methods", "hard", "pcgrad", "--out",
                           str(tmp_path)]) == 0
    record = json.loads((tmp_path / "multitask.json").read_text())
    assert record["mode"] == "smoke" and record["config"]["multidigits"]["methods"] == ["hard", "pcgrad"]
    assert {"hard/left/acc", "pcgrad/right/ci95", "toy/gradnorm/worst"} <= set(record["metrics"])
    assert set(record["curves"]["toy"]) == {"equal", "uncertainty", "gradnorm"}


def test_reproduce_multitask_adds_the_mlp_trunk_under_its_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPPING_CACHE", str(tmp_path / "cache"))
    tiny = mt.MultitaskConfig(epochs=1, batch=100, train_pairs=300, test_pairs=100, hidden=16, filters=4, seeds=(0, 1))
    monkeypatch.setattr(mt.MultitaskConfig, "for_mode", classmethod(lambda cls, mode=None: tiny))
    monkeypatch.setattr(mt.ToyConfig, "for_mode", classmethod(lambda cls, mode=None: mt.ToyConfig(
        steps=4, seeds=(0, 1), log_every=2)))
    assert reproduce.main(["multitask", "--mode", "smoke", "--methods", "single", "hard", "--out",
                           str(tmp_path)]) == 0
    record = json.loads((tmp_path / "multitask.json").read_text())
    assert record["config"]["multidigits"]["trunk"] == "conv"
    assert record["config"]["multidigits_mlp"]["trunk"] == "mlp"
    assert {"hard/left/acc", "mlp/hard/left/acc", "mlp/hard/right/gain_ci95"} <= set(record["metrics"])
    assert record["metrics"]["hard/left/acc"] != record["metrics"]["mlp/hard/left/acc"] or \
        record["metrics"]["hard/right/acc"] != record["metrics"]["mlp/hard/right/acc"]


@pytest.mark.parametrize("trunk", mt.TRUNKS)
def test_parameter_count_counts_the_networks_a_method_trains(trunk):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    one = count(mt.build("single", 144, 32, 10, tasks=["left"], trunk=trunk, filters=4))
    hard = count(mt.build("hard", 144, 32, 10, trunk=trunk, filters=4))
    assert mt.parameter_count("single", trunk, hidden=32, filters=4) == 2 * one
    assert mt.parameter_count("hard", trunk, hidden=32, filters=4) == hard
    for method in mt.WEIGHTINGS + mt.AGGREGATORS:  # they train the hard-sharing network
        assert mt.parameter_count(method, trunk, hidden=32, filters=4) == hard
    soft = mt.parameter_count("soft", trunk, hidden=32, filters=4)
    assert soft == 2 * one and hard < soft  # one network per task; sharing the trunk saves one trunk
    assert set(mt.SHORT) == set(mt.METHODS) and max(map(len, mt.SHORT.values())) <= 20


def test_paired_formats_each_task_difference_or_dashes():
    metrics = {"hard/left/gain": -0.8, "hard/left/gain_ci95": 1.419, "hard/right/gain": 0.25,
               "hard/right/gain_ci95": 0.4}
    assert mt.paired(metrics, "hard") == ["-0.80 ± 1.42", "+0.25 ± 0.40"]
    assert mt.paired(metrics, "pcgrad") == ["—", "—"]
    assert mt.paired(None, "hard") == ["—", "—"]


def test_for_mode_keeps_the_full_run_and_picks_the_live_trunk():
    assert mt.MultitaskConfig.for_mode("full") == mt.MultitaskConfig()  # the stored record's configuration
    assert mt.MultitaskConfig.for_mode("full", trunk="conv") == mt.MultitaskConfig()
    assert mt.MultitaskConfig.for_mode("full", trunk="mlp") == mt.MultitaskConfig(trunk="mlp")
    for mode in ("smoke", "quick"):
        mlp, conv = mt.MultitaskConfig.for_mode(mode), mt.MultitaskConfig.for_mode(mode, trunk="conv")
        assert mlp.trunk == "mlp" and mlp.methods == mt.METHODS and mt.MultitaskConfig.for_mode(mode, "mlp") == mlp
        assert conv.trunk == "conv" and conv.methods == ("single", "hard") and len(conv.seeds) >= 2
        assert conv.epochs <= mlp.epochs and conv.train_pairs <= mlp.train_pairs
    with pytest.raises(ValueError, match="trunk must be one of"):
        mt.MultitaskConfig.for_mode("quick", trunk="resnet")


def test_contains_zero_needs_every_task_interval_to_reach_zero():
    metrics = {"a/left/gain": -0.8, "a/left/gain_ci95": 1.4, "a/right/gain": -0.3, "a/right/gain_ci95": 0.4,
               "b/left/gain": 0.2, "b/left/gain_ci95": 0.4, "b/right/gain": -1.5, "b/right/gain_ci95": 0.8}
    assert mt.contains_zero(metrics, "a") and not mt.contains_zero(metrics, "b")
