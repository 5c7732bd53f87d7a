"""Figures made from stored full runs, for the README and the book's landing page.

    python -m mapping.figures        # writes book/figures/sinusoid_methods.png from results/sinusoid.json
"""
from __future__ import annotations

import sys
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
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    plot.error_curves(curves, ax=ax, logy=True, ylim=(0.1, 10),
                      title="Sinusoid regression, K = 5: fine-tuning from a meta-learned start")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)  # covers no line
    commit = record["commit"][:10]
    fig.text(0.01, 0.01, f"{record['command']} · mode {record['mode']} · seed {record['seed']} · commit {commit}",
             fontsize=6, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")  # the legend below the axes included
    plt.close(fig)
    return out


def main() -> int:
    print(f"wrote {sinusoid_methods()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
