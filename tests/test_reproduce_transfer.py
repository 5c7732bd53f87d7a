"""``python -m mapping.reproduce transfer``: the moons sweep, digits adaptation and Omniglot transfer in one record."""

import pytest
import torch

from mapping.experiments import moons as mo
from mapping.experiments import transfer_omniglot as to


def test_moons_sweep_keys_and_gap_closed_follow_the_means():
    torch.set_num_threads(1)
    config = mo.MoonsConfig(angles=(35.0, 60.0), seeds=(0, 1), steps=60)
    metrics = mo.run_sweep(config)
    for angle in ("35", "60"):
        for method in mo.METHODS:
            seeds = [metrics[f"moons/{angle}/{method}/seed{s}"] for s in config.seeds]
            assert metrics[f"moons/{angle}/{method}/acc"] == pytest.approx(sum(seeds) / 2)
            assert all(0 <= a <= 100 for a in seeds)
        low, high = metrics[f"moons/{angle}/source_only/acc"], metrics[f"moons/{angle}/target_supervised/acc"]
        if high > low:
            gap = (metrics[f"moons/{angle}/dann/acc"] - low) / (high - low)
            assert metrics[f"moons/{angle}/dann/gap_closed"] == pytest.approx(gap)


def test_reproduce_transfer_writes_one_record(smoke_record):
    record = smoke_record("transfer", to)
    assert record["mode"] == "smoke" and set(record["config"]) == {"moons", "digits", "omniglot"}
    metrics = record["metrics"]
    assert {"moons/35/dann/acc", "digits/dann/acc", "digits/source_only/ci95", "inductive/finetune/k1/acc",
            "unsupervised/rotation/nmi"} <= set(metrics)
