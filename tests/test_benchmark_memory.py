"""Smoke test of benchmarks/maml_memory.py: its record, memory that grows with the inner steps and the tasks,
first-order below second-order, and the figure drawn from the record."""
import json

import matplotlib
import pytest
import torch

from benchmark_loader import load_benchmark
from mapping.plot import memory_figure
from mapping.results import PROVENANCE_FIELDS

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory")
    threads = torch.get_num_threads()
    try:
        returned = load_benchmark("maml_memory").main(["--tiny", "--quick", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    stored = json.loads((out / "benchmark_maml_memory.json").read_text())
    assert stored["metrics"] == returned["metrics"]
    return stored


@pytest.mark.slow
def test_tiny_run_writes_every_point_of_the_sweeps_and_the_options(record):
    assert all(field in record for field in PROVENANCE_FIELDS) and record["mode"] == "tiny"
    assert record["config"]["memory_validation_mib"] == {"32MiB": 32.0, "32-32+16+12+12": 40.0}
    m, expected = record["metrics"], set()
    for name, c in record["config"]["models"].items():
        points = {(s, c["tasks"], "vmap") for s in c["step_sweep"]} | {(c["steps"], t, "vmap") for t in c["task_sweep"]}
        points |= {(c["steps"], c["tasks"], label) for label in c["options"]}
        for steps, tasks, label in points:
            k = f"{name}/steps{steps}/tasks{tasks}/{label}"
            expected |= {f"{k}/ms_per_iter", f"{k}/peak_mib"}
            assert m[f"{k}/ms_per_iter"] > 0 and m[f"{k}/peak_mib"] > 0
            if label != "vmap":
                expected |= {f"{k}/ms_vs_vmap", f"{k}/peak_vs_vmap"}
                plain = m[f"{name}/steps{steps}/tasks{tasks}/vmap/peak_mib"]
                assert m[f"{k}/peak_vs_vmap"] == pytest.approx(m[f"{k}/peak_mib"] / plain, rel=1e-2)
            if label not in ("vmap", "first_order"):  # the same meta-gradient, up to float32 rounding
                expected.add(f"{k}/grad_rel_err")
                assert m[f"{k}/grad_rel_err"] < 1e-3, k
    assert set(m) == expected and set(record["config"]["models"]) == {"mlp", "conv4"}


@pytest.mark.slow
def test_memory_grows_with_steps_and_tasks_and_first_order_holds_less(record):
    m = record["metrics"]
    for name, c in record["config"]["models"].items():
        by_steps = [m[f"{name}/steps{s}/tasks{c['tasks']}/vmap/peak_mib"] for s in c["step_sweep"]]
        by_tasks = [m[f"{name}/steps{c['steps']}/tasks{t}/vmap/peak_mib"] for t in c["task_sweep"]]
        assert all(a < b for a, b in zip(by_steps, by_steps[1:])), (name, by_steps)
        assert all(a < b for a, b in zip(by_tasks, by_tasks[1:])), (name, by_tasks)
        fixed = f"{name}/steps{c['steps']}/tasks{c['tasks']}"
        assert m[f"{fixed}/first_order/peak_mib"] < m[f"{fixed}/vmap/peak_mib"]
        small = min(c["chunks"])  # fewer tasks in one graph: less memory
        assert m[f"{fixed}/chunk{small}/peak_mib"] < m[f"{fixed}/vmap/peak_mib"]


@pytest.mark.slow
def test_memory_figure_draws_one_line_per_model_and_one_marker_per_option(record):
    models = record["config"]["models"]
    fig = memory_figure(record)
    by_steps, by_tasks, options = fig.axes
    assert len(by_steps.lines) == len(by_tasks.lines) == len(models)
    for ax, sweep in ((by_steps, "step_sweep"), (by_tasks, "task_sweep")):
        for line, c in zip(ax.lines, models.values()):
            assert list(line.get_xdata()) == list(c[sweep])
    assert len(options.collections) == sum(len(c["options"]) for c in models.values())
    name, c = next(iter(models.items()))
    first = f"{name}/steps{c['steps']}/tasks{c['tasks']}/vmap/peak_mib"
    assert by_tasks.lines[0].get_ydata()[list(c["task_sweep"]).index(c["tasks"])] == record["metrics"][first]
    assert "MiB" in by_steps.get_ylabel() and options.get_legend() is not None
