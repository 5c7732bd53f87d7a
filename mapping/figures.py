"""Figures made from stored full runs, for the README and the book's landing page.

    python -m mapping.figures        # writes book/figures/sinusoid_methods.png from results/sinusoid.json
"""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import matplotlib

from . import plot, results
from .report import curve_label, steps_curve

ROOT = Path(__file__).resolve().parents[1]


def sinusoid_methods(out: Path = ROOT / "book" / "figures" / "sinusoid_methods.png") -> Path:
    """Query MSE against adaptation steps (K = 5) for every method of the stored sinusoid run."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .experiments.sinusoid import LABELS, METHODS

    record = results.load("sinusoid")
    if record is None:
        raise FileNotFoundError(f"no stored run: run `python -m mapping.reproduce sinusoid` to write "
                                f"{results.results_dir() / 'sinusoid.json'}")
    metrics = record["metrics"]
    curves = {}
    for name in METHODS:  # step size tuned on validation tasks; Meta-SGD fine-tunes with its learned rates
        tuned = f"{name}/k5/tuned/step0/mse" in metrics
        prefix = f"{name}/k5" + ("/tuned" if tuned else "")
        label = curve_label(LABELS[name] + ("" if tuned else " (learned rates)"), metrics, prefix, 10)
        curves[label] = steps_curve(metrics, prefix, 10)  # stops where fine-tuning diverged on some tasks
    fig, ax = plot.figure(height=4.8, width=6.4)  # within the book's column; constrained layout
    plot.error_curves(curves, ax=ax, logy=True, ylim=(0.1, 10),  # its legend below the axes, over no line
                      title="Sinusoid regression, K = 5: fine-tuning from a meta-learned start")
    commit = record["commit"][:10]
    caption = f"{results.portable(record['command'])} · mode {record['mode']} · seed {record['seed']} · commit {commit}"
    fig.supxlabel(textwrap.fill(caption, 90), x=0.01, ha="left", fontsize=plot.MIN_FONT,
                  color="gray")  # under the legend, wrapped to stay inside the figure
    plot.check_legible(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def main() -> int:
    print(f"wrote {sinusoid_methods()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
