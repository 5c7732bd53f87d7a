"""Every figure function of :mod:`mapping.plot` draws for the book's column: at most ``COLUMN_INCHES`` wide,
no text under ``MIN_FONT`` points, no legend over data (:func:`mapping.plot.check_legible`), and the check
itself catches each of those."""
import inspect

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from mapping import plot, results  # noqa: E402

# public functions of mapping.plot that draw nothing themselves (helpers, and the checks)
NOT_FIGURES = {"figure", "check_legible", "smoothed"}


def _tasks():
    x = torch.linspace(-5, 5, 30).repeat(4, 1)[..., None] + torch.arange(4.0)[:, None, None] / 10
    return x, torch.arange(1.0, 5.0)[:, None, None] * torch.sin(x)


def _fit():
    grid = torch.linspace(-5, 5, 100)
    truth = 4 * torch.sin(grid + 1)
    predictions = {0: torch.zeros(100), 1: 2 * torch.sin(grid + 1), 10: 3.9 * torch.sin(grid + 1.1)}
    support_x = torch.tensor([-4.0, -2.0, 0.0, 1.5, 3.0])
    return grid, truth, predictions, support_x, 4 * torch.sin(support_x + 1)


CURVES = {"MAML, tuned step size (live)": ([1.0, 0.5, 0.3, 0.2], [0.1, 0.05, 0.04, 0.03]),
          "pretrained, tuned step size (live)": ([2.0, 1.8, 1.7, 1.65], [0.2, 0.2, 0.2, 0.2]),
          "Reptile (stored full run)": ([1.5, 0.4, float("nan"), float("nan")], [0.3, 0.1, 0.0, 0.0])}


def _histories():
    def history(scale):
        return {"train": [{"iteration": i, "loss": scale / (1 + i)} for i in range(0, 500, 10)],
                "eval": [{"iteration": i, "val_mse_step1": scale / (1 + i / 100)} for i in range(0, 501, 100)]}
    return {"MAML (query loss after 1 step)": history(3.0), "pretrained (regression loss)": history(2.0)}


def _moons():
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.meshgrid(torch.linspace(-2, 3, 40), torch.linspace(-1.5, 2, 40), indexing="xy")
    prob = torch.sigmoid(3 * (ys - 0.3 * xs))
    source = torch.randn(60, 2, generator=g), torch.randint(0, 2, (60,), generator=g)
    target = torch.randn(60, 2, generator=g) + 0.5, torch.randint(0, 2, (60,), generator=g)
    return xs, ys, prob, source, target


def _features():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(100) % 10
    return torch.randn(100, 2, generator=g) + y[:, None], torch.randn(100, 2, generator=g), y, y


def _domain_panels():
    """Three panels of :func:`mapping.plot.domain_scatter` and their shared :func:`mapping.plot.domain_legend`,
    as the transfer page draws them."""
    fig, axes = plot.figure(1, 3, height=3.0)
    for ax, name in zip(axes, ("source only", "DANN", "MMD")):
        plot.domain_scatter(*_features(), ax, f"{name}: domains told apart 90%")
    assert plot.domain_legend(fig) is None
    return fig


def _compiled_record():
    names, threads = ["sinusoid/maml", "sinusoid/reptile", "omniglot/maml", "omniglot/protonet"], [1, 2]
    return {"config": {"configurations": names, "threads": threads},
            "metrics": {f"{n}/threads{t}/{kind}/ms_per_step": (i + 1) * 10.0 ** i / t / (1 + (kind == "compiled"))
                        for i, n in enumerate(names) for t in threads for kind in ("eager", "compiled")}}


def _memory_record():
    options = ["vmap", "first_order", "chunk8", "checkpoint"]
    models = {"mlp": {"step_sweep": [1, 2, 5], "task_sweep": [4, 8, 16], "steps": 5, "tasks": 8, "options": options},
              "conv4": {"step_sweep": [1, 2, 5], "task_sweep": [4, 8, 16], "steps": 2, "tasks": 8,
                        "options": options}}
    m = {}
    for scale, (name, c) in ((1.0, ("mlp", models["mlp"])), (100.0, ("conv4", models["conv4"]))):
        for s in c["step_sweep"]:
            m[f"{name}/steps{s}/tasks{c['tasks']}/vmap/peak_mib"] = scale * s * c["tasks"]
        for t in c["task_sweep"]:
            m[f"{name}/steps{c['steps']}/tasks{t}/vmap/peak_mib"] = scale * c["steps"] * t
        for i, label in enumerate(options[1:]):
            k = f"{name}/steps{c['steps']}/tasks{c['tasks']}/{label}"
            m[f"{k}/ms_vs_vmap"], m[f"{k}/peak_vs_vmap"] = 0.8 + 0.4 * i, 0.9 - 0.2 * i
    return {"config": {"models": models}, "metrics": m}


def _stored(name, synthetic):
    """The stored record the book draws (``results/``), or a synthetic one of its shape where it is absent."""
    record = results.load(name)
    return synthetic() if record is None else record


# each figure function of mapping.plot, called as the book calls it, with small synthetic inputs (a list of
# calls where the stored record differs from the synthetic one)
CALLS = {
    "sinusoid_tasks": [lambda: plot.sinusoid_tasks(*_tasks(), title="four tasks from p(T)")],
    "adaptation_fit": [lambda: plot.adaptation_fit(*_fit(), title="MAML, K = 5 (quick run)")],
    "error_curves": [lambda: plot.error_curves(CURVES, title="K = 5", logy=True, ylim=(0.01, 10)),
                     lambda: plot.error_curves(CURVES, title="K = 5")],
    "training_curve": [lambda: plot.training_curve(_histories())],
    "eval_curve": [lambda: plot.eval_curve(_histories(), "val_mse_step1", title="validation tasks, K = 10",
                                           ylabel="query MSE after 1 step")],
    "decision_regions": [lambda: plot.decision_regions(*_moons(), title="DANN: target 98%")],
    "domain_scatter": [lambda: plot.domain_scatter(*_features(), title="DANN: domains told apart 55%")],
    "domain_legend": [_domain_panels],
    "start_curves": [lambda: plot.start_curves({"from scratch": ([0, 100, 200], [40.0, 60.0, 70.0], [2, 2, 2]),
                                                "pretrained": ([0, 100, 200], [50.0, 65.0, 72.0], None)},
                                               title="5-way 1-shot, new alphabets")],
    "compiled_speedups": [lambda: plot.compiled_speedups(_compiled_record()),
                          lambda: plot.compiled_speedups(_stored("benchmark_compiled_steps", _compiled_record))],
    "memory_figure": [lambda: plot.memory_figure(_memory_record()),
                      lambda: plot.memory_figure(_stored("benchmark_maml_memory", _memory_record))],
}


def figure_functions():
    """The public functions defined in :mod:`mapping.plot`, less those that draw nothing."""
    return sorted(name for name, f in inspect.getmembers(plot, inspect.isfunction)
                  if f.__module__ == plot.__name__ and not name.startswith("_") and name not in NOT_FIGURES)


def test_every_figure_function_has_synthetic_arguments():
    functions = figure_functions()
    assert {"adaptation_fit", "compiled_speedups", "memory_figure", "domain_legend"} <= set(functions)
    missing = set(functions) - set(CALLS)
    assert not missing, f"add a call of {sorted(missing)} to CALLS so that its figure is checked for the column"
    assert not set(CALLS) - set(functions), "CALLS names a function mapping.plot no longer has"


@pytest.mark.parametrize("name", figure_functions())
def test_figure_function_fits_the_column(name):
    for call in CALLS.get(name, []):
        out = call()
        fig = out.figure if isinstance(out, Axes) else out
        assert isinstance(fig, plt.Figure), f"{name} returned {type(out).__name__}"
        try:
            plot.check_legible(fig)
        finally:
            plt.close(fig)
    assert name in CALLS, f"{name} has no synthetic arguments in CALLS"


def test_functions_draw_on_a_given_axes_and_keep_their_return_type():
    fig, axes = plot.figure(1, 2)
    assert plot.adaptation_fit(*_fit(), ax=axes[0]) is axes[0]
    assert plot.error_curves(CURVES, ax=axes[1], logy=True) is axes[1]
    assert len(fig.axes) == 2 and fig.get_figwidth() == plot.COLUMN_INCHES
    plot.check_legible(fig)  # legends below each of two panels side by side, still legible
    plt.close(fig)


def test_check_legible_rejects_a_wide_figure_small_text_a_legend_over_data_and_text_cut_off():
    fig = plt.figure(figsize=(10, 3))
    fig.add_subplot().plot([0, 1], [0, 1])
    with pytest.raises(ValueError, match="10.00 in wide"):
        plot.check_legible(fig)
    plt.close(fig)

    fig, ax = plot.figure()
    ax.plot([0, 1], [0, 1], label="a line")
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below the axes: only too small
    with pytest.raises(ValueError, match=r"under 8.0 pt.*a line"):
        plot.check_legible(fig)
    plt.close(fig)

    fig, ax = plot.figure()
    ax.plot(torch.linspace(0, 1, 50), torch.linspace(0, 1, 50), label="a diagonal")
    ax.legend(loc="center")  # right over the line
    with pytest.raises(ValueError, match="legend.*covers"):
        plot.check_legible(fig)
    ax.legend(loc="upper left")  # the empty corner: passes
    assert plot.check_legible(fig) is fig
    plt.close(fig)

    fig, ax = plot.figure(width=4)
    ax.set_title("a title far wider than a figure four inches wide, cut off at both of its ends")
    with pytest.raises(ValueError, match="past the figure's left or right edge"):
        plot.check_legible(fig)
    plt.close(fig)

    with pytest.raises(ValueError, match="column"):
        plot.figure(width=7)
    fig, ax = plot.figure(width=plot.COLUMN_INCHES)
    assert fig.get_figwidth() == plot.COLUMN_INCHES and plot.check_legible(fig) is fig
    plt.close(fig)
