"""Smoke test of benchmarks/meta_execution.py: its record, and a memory reading that tells executions apart."""
import json

import pytest
import torch

from benchmark_loader import load_benchmark as load
from mapping.results import PROVENANCE_FIELDS

EXECUTIONS = ("vmap", "chunk8", "chunk4", "loop")


def load_benchmark():
    return load("meta_execution")


@pytest.mark.slow
def test_quick_tiny_run_writes_a_record_and_vmap_holds_more_memory_than_loop(tmp_path):
    threads = torch.get_num_threads()
    try:
        returned = load_benchmark().main(["--tiny", "--quick", "--steps", "1", "2", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "benchmark_meta_execution.json").read_text())
    assert record["metrics"] == returned["metrics"]
    assert all(field in record for field in PROVENANCE_FIELDS) and record["mode"] == "tiny"
    assert record["config"]["memory_validation_mib"] == {"32MiB": 32.0, "32-32+16+12+12": 40.0}

    metrics = record["metrics"]
    for config in ("sinusoid", "wide_mlp", "conv4"):
        for steps in (1, 2):
            labels = EXECUTIONS + (("vmap_unrouted",) if config == "conv4" else ())
            for label in labels:
                key = f"{config}/steps{steps}/{label}"
                assert metrics[f"{key}/ms_per_iter"] > 0 and metrics[f"{key}/peak_mib"] > 0
                assert f"{key}/ratio_vs_vmap" in metrics and f"{key}/grad_rel_err" in metrics
                if label != "vmap_unrouted":  # the routed executions compute the same meta-gradient
                    assert metrics[f"{key}/grad_rel_err"] < 1e-3, key
            assert metrics[f"{config}/steps{steps}/vmap/ratio_vs_vmap"] == 1.0
    assert not any(k.startswith(("sinusoid", "wide_mlp")) and "unrouted" in k for k in metrics)
    assert len(metrics) == 4 * (3 * 2 * 4 + 2)

    for steps in (1, 2):  # vmap holds every task's graph at once; the loop one task's
        wide = f"wide_mlp/steps{steps}"
        assert metrics[f"{wide}/vmap/peak_mib"] > 2 * metrics[f"{wide}/loop/peak_mib"]
        assert metrics[f"{wide}/chunk4/peak_mib"] < metrics[f"{wide}/vmap/peak_mib"]
