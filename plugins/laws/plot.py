"""The picture of a fit: measured points and fitted curves against the ratio, one panel per metric.

Each (model, recovery size) gets its points and the full law's curve in one colour; the law
without D is drawn dashed once per model, and the uncompressed score L0 sits at r = 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunekit.plugins import figures
from prunekit.plugins.laws.analysis import METRICS, FitReport
from prunekit.plugins.laws.law import LawForm
from prunekit.plugins.laws.points import Point

SYMBOLS = {"alpha": "α", "beta": "β", "gamma": "γ"}
LABELS = {"loss": "test loss (cross-entropy)", "accuracy": "mean zero-shot accuracy"}


def plot_fit(report: FitReport, points: list[Point], target: Path) -> None:
    """Write the figure to ``target`` (PNG) with matplotlib's file-only Agg backend."""
    plt = figures.pyplot()

    metrics = [m for m in METRICS if m in report.laws]
    figure, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.5), squeeze=False)
    grid = np.linspace(0, max(report.ratios), 100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    several = len(report.baselines) > 1
    for axis, metric in zip(axes[0], metrics):
        laws = report.laws[metric]
        groups = sorted({(p.model, p.recover_size) for p in points if getattr(p, metric) is not None})
        for index, (model, size) in enumerate(groups):
            colour = colours[index % len(colours)]
            mine = [p for p in points if (p.model, p.recover_size) == (model, size) and getattr(p, metric) is not None]
            label = f"{model}, D={size}" if several else f"D={size}"
            axis.scatter([p.ratio for p in mine], [getattr(p, metric) for p in mine], color=colour, label=label)
            l0 = report.baselines[model][metric]
            if LawForm.FULL in laws and l0 is not None:
                axis.plot(grid, [laws[LawForm.FULL].predict(l0, r, size) for r in grid], color=colour)
        for model, scores in report.baselines.items():
            l0 = scores[metric]
            if l0 is None:
                continue
            axis.scatter([0], [l0], color="black", marker="x", label="uncompressed" if not several else None)
            if LawForm.WITHOUT_D in laws:
                axis.plot(grid, [laws[LawForm.WITHOUT_D].predict(l0, r) for r in grid], color="grey",
                          linestyle="--", label="law without D" if model == next(iter(report.baselines)) else None)
        fitted = laws.get(LawForm.FULL) or laws.get(LawForm.WITHOUT_D)
        exponents = ", ".join(f"{SYMBOLS[name]}={value:.2f}" for name, value in fitted.coefficients.items())
        axis.set_title(f"{metric}: {fitted.form.value} law ({exponents})")
        axis.set_xlabel("compression ratio r")
        axis.set_ylabel(LABELS[metric])
        axis.legend(fontsize="small")
    figures.save_figure(figure, target, dpi=120)
