"""The rate–distortion plane of a sweep (Alemi et al. 2018, Fig. 3a) as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on workers and servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from workers.results import Selection, TrialOutcome  # noqa: E402


def render_rd_plane(trials: list[TrialOutcome], selection: Selection) -> bytes:
    """Held-out rate R (x) vs distortion D (y) of every evaluated trial; the Pareto front, collapsed trials,
    the recommended and max-ELBO trials marked; dotted iso-ELBO lines D + R = const. Returns PNG bytes."""
    evaluated = [t for t in trials if "rate" in t.metrics and "distortion" in t.metrics]
    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        if evaluated:
            rates = np.array([t.metrics["rate"] for t in evaluated])
            distortions = np.array([t.metrics["distortion"] for t in evaluated])
            collapsed = np.array([t.metrics.get("collapsed", 0.0) >= 0.5 for t in evaluated])
            _iso_elbo_lines(axes, rates, distortions)
            axes.scatter(rates[~collapsed], distortions[~collapsed], s=28, c="tab:blue", label="trial")
            if collapsed.any():
                axes.scatter(rates[collapsed], distortions[collapsed], s=40, c="tab:red", marker="x", label="collapsed")
            front = sorted(selection.front, key=lambda t: t.metrics["rate"])
            if front:
                axes.plot(
                    [t.metrics["rate"] for t in front],
                    [t.metrics["distortion"] for t in front],
                    "o-",
                    mfc="none",
                    ms=10,
                    c="tab:green",
                    label="Pareto front (feasible)",
                )
            _mark(axes, selection.max_elbo, "s", "tab:orange", "max ELBO")
            _mark(axes, selection.recommended, "*", "gold", "recommended")
            axes.legend(loc="best", fontsize=8, framealpha=0.8)
        else:
            axes.text(0.5, 0.5, "no evaluated trial", ha="center", va="center", transform=axes.transAxes)
        axes.set_xlabel("rate R (nats)")
        axes.set_ylabel("distortion D (nats)")
        axes.set_title("held-out rate–distortion plane")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def _iso_elbo_lines(axes: plt.Axes, rates: np.ndarray, distortions: np.ndarray) -> None:
    # Lines of slope -1: each is a set of models of equal ELBO = -(D + R) (Alemi et al. 2018).
    totals = rates + distortions
    r_max = float(rates.max()) * 1.1 + 1.0
    for index, total in enumerate(np.linspace(totals.min(), totals.max(), 4) if np.ptp(totals) > 0 else totals[:1]):
        r = np.linspace(0.0, min(r_max, total), 50)
        axes.plot(r, total - r, ":", c="grey", lw=0.8, label="iso-ELBO D + R = const" if index == 0 else None)
    axes.set_xlim(left=-0.02 * r_max, right=r_max)
    axes.set_ylim(bottom=min(0.0, float(distortions.min())), top=float(distortions.max()) * 1.05 + 1.0)


def _mark(axes: plt.Axes, trial: TrialOutcome | None, marker: str, colour: str, label: str) -> None:
    if trial is not None and "rate" in trial.metrics:
        axes.scatter(
            [trial.metrics["rate"]],
            [trial.metrics["distortion"]],
            s=160,
            marker=marker,
            c=colour,
            edgecolors="black",
            zorder=5,
            label=label,
        )
