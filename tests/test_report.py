"""mapping.report's helpers for the book's tables and curves: timings, machine paths, stopped curves."""
import math

from mapping.report import curve_label, stopped_curve, steps_curve, timings


def test_timings_reads_one_heading_of_a_record():
    metrics = {"mapping/ms_per_iter": 3.0, "loop/ms_per_iter": 18.0, "ratio_vs_loop": 6.0,
               "conv4/steps1/vmap/ms_per_iter": 995.0, "conv4/steps1/loop/ms_per_iter": 628.0,
               "conv4/steps1/loop/peak_mib": 9.0, "conv4/steps5/loop/ms_per_iter": 2054.0}
    assert timings(metrics) == {"mapping": 3.0, "loop": 18.0}
    assert timings(metrics, "conv4/steps1") == {"vmap": 995.0, "loop": 628.0}
    assert timings(metrics, "conv4/steps1/") == timings(metrics, "conv4/steps1")
    assert timings(metrics, "wide_mlp/steps1") == {}


def _metrics(diverged_at: dict[int, float], steps: int = 6) -> dict[str, float]:
    """A flat record as mapping.experiments.sinusoid.evaluate writes it: no mean where some task diverged."""
    out = {}
    for s in range(steps + 1):
        share = diverged_at.get(s, 0.0)
        out[f"m/k5/step{s}/diverged"] = share
        if share == 0:
            out[f"m/k5/step{s}/mse"], out[f"m/k5/step{s}/ci95"] = 1.0 / (s + 1), 0.1
    return out


def test_stopped_curve_never_comes_back_after_its_first_divergent_step():
    # tasks diverged at steps 3 and 5 only: the mean exists again at 4 and 6, where steps_curve draws it
    metrics = _metrics({3: 0.02, 5: 0.01})
    mean, _ = steps_curve(metrics, "m/k5", 6)
    assert not math.isnan(mean[4]) and not math.isnan(mean[6])
    mean, ci = stopped_curve(metrics, "m/k5", 6)
    assert mean[:3] == [1.0, 0.5, 1 / 3] and ci[:3] == [0.1] * 3
    assert all(math.isnan(v) for v in mean[3:] + ci[3:])
    assert curve_label("M", metrics, "m/k5", 6) == "M (diverged on 2.0% of tasks at step 3)"


def test_stopped_curve_is_the_whole_curve_when_nothing_diverged():
    metrics = _metrics({})
    assert stopped_curve(metrics, "m/k5", 6) == steps_curve(metrics, "m/k5", 6)
