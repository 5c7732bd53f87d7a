"""Smoke runs of benchmarks/compiled_steps.py and benchmarks/maml_sinusoid.py (eager and compiled side by side):
their records, and the checks they make before timing anything."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from benchmark_loader import load_benchmark as load  # noqa: E402
from mapping import plot  # noqa: E402
from mapping.results import PROVENANCE_FIELDS  # noqa: E402


@pytest.mark.slow
def test_compiled_steps_records_eager_and_compiled_times_per_thread_count(tmp_path):
    threads = torch.get_num_threads()
    only = ["sinusoid/maml", "sinusoid/reptile", "omniglot/protonet"]
    record = load("compiled_steps").main(["--tiny", "--quick", "--backend", "aot_eager", "--threads", "1",
                                          "--only", *only, "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads  # restored
    stored = json.loads((tmp_path / "benchmark_compiled_steps.json").read_text())
    assert stored["metrics"] == record["metrics"] and all(f in stored for f in PROVENANCE_FIELDS)
    m = stored["metrics"]
    for name in only:
        key = f"{name}/threads1"
        assert m[f"{key}/eager/ms_per_step"] > 0 and m[f"{key}/compiled/ms_per_step"] > 0
        assert m[f"{key}/speedup"] == pytest.approx(m[f"{key}/eager/ms_per_step"] / m[f"{key}/compiled/ms_per_step"])
        assert 0 < m[f"{key}/compile_seconds"] <= m[f"{key}/first_call_seconds"] + 1e-9
    ax = plot.compiled_speedups(stored)
    heights = sorted(bar.get_height() for bar in ax.patches)
    assert heights == pytest.approx(sorted(m[f"{name}/threads1/{kind}/ms_per_step"]
                                           for name in only for kind in ("eager", "compiled")))
    plt.close(ax.figure)
    with pytest.raises(SystemExit):
        load("compiled_steps").main(["--tiny", "--quick", "--only", "sinusoid/nope"])


@pytest.mark.slow
def test_maml_sinusoid_benchmark_reports_compiled_beside_eager_loop_and_higher(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        load("maml_sinusoid").main(["--quick", "--backend", "aot_eager", "--threads", "1", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    assert "meta-gradients agree" in capsys.readouterr().out
    m = json.loads((tmp_path / "benchmark_maml_sinusoid.json").read_text())["metrics"]
    assert m["compiled/compile_seconds"] > 0
    for other in ("mapping", "loop") + (("higher",) if "higher/ms_per_iter" in m else ()):
        assert m[f"compiled/ratio_vs_{other}"] == pytest.approx(
            m[f"{other}/ms_per_iter"] / m["compiled/ms_per_iter"], rel=1e-2)
