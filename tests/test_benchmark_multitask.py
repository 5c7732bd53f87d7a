"""Smoke test of benchmarks/multitask_grads.py: every route gives the loop's Jacobian, and the record is written."""
import importlib.util
import json
from pathlib import Path

import torch

from mapping.results import PROVENANCE_FIELDS

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "multitask_grads.py"


def test_tiny_quick_run_writes_a_record_with_every_route_and_ratio(tmp_path):
    spec = importlib.util.spec_from_file_location("multitask_grads", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        module.main(["--tiny", "--quick", "--threads", "1", "--tasks", "2", "3", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "benchmark_multitask_grads.json").read_text())
    assert all(field in record for field in PROVENANCE_FIELDS)
    metrics = record["metrics"]
    assert metrics and all(v >= 0 for v in metrics.values())
    assert any("one_pass" in k for k in metrics) and any("loop" in k for k in metrics)
