"""The rate–distortion plane of a sweep (Alemi et al. 2018, Fig. 3a) as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display on workers and servers; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from workers.results import Selection, TrialOutcome  # noqa: E402

_LABEL_ALL_UP_TO = 40  # beyond this many trials only the marked ones carry their number
_PALETTE = ["tab:blue", "tab:purple", "tab:green", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:grey"]


def family(trial: TrialOutcome) -> str:
    """What colours a trial: its decoder when searched, and its objective family (β or capacity)."""
    objective = "capacity" if trial.params.get("objective") == "capacity" else "β-VAE"
    decoder = trial.params.get("decoder")
    return f"{decoder} · {objective}" if decoder else objective


def render_rd_plane(trials: list[TrialOutcome], selection: Selection, title: str | None = None) -> bytes:
    """Held-out rate R (x) vs distortion D (y) of every evaluated trial, coloured by family, numbered; collapsed
    trials as crosses, censored (stopped early) hollow; labelled iso-ELBO lines; the objective-space Pareto front,
    the RD-optimal trials, the max-ELBO trial (and whether it collapsed) and the recommended one. PNG bytes."""
    evaluated = [t for t in trials if "rate" in t.metrics and "distortion" in t.metrics]
    figure, axes = plt.subplots(figsize=(8.0, 5.6), dpi=110)
    try:
        if evaluated:
            _draw(axes, evaluated, selection)
        else:
            axes.text(0.5, 0.5, "no evaluated trial", ha="center", va="center", transform=axes.transAxes)
        axes.set_xlabel("rate R = E KL(q(z|x) ‖ p(z))  (nats)")
        axes.set_ylabel("distortion D = −E log p(x|z)  (nats)")
        axes.set_title(title or "held-out rate–distortion plane", fontsize=10)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def _draw(axes: plt.Axes, evaluated: list[TrialOutcome], selection: Selection) -> None:
    rates = np.array([t.metrics["rate"] for t in evaluated])
    distortions = np.array([t.metrics["distortion"] for t in evaluated])
    limits = _limits(rates, distortions)
    axes.set_xlim(*limits[0])
    axes.set_ylim(*limits[1])
    _iso_elbo_lines(axes, rates, distortions, limits)
    families = sorted({family(t) for t in evaluated})
    colours = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(families)}
    for trial in evaluated:
        colour = colours[family(trial)]
        censored = trial.status != "completed"
        marker = "X" if trial.collapsed else "o"
        face = "none" if censored else colour
        axes.scatter(
            trial.metrics["rate"],
            trial.metrics["distortion"],
            s=46,
            marker=marker,
            facecolors=face,
            edgecolors=colour,
            linewidths=1.4 if censored else 0.6,
            linestyle="--" if censored else "-",
            zorder=3,
        )
    for name in families:
        axes.scatter([], [], s=46, c=colours[name], label=name)
    if any(t.collapsed for t in evaluated):
        axes.scatter([], [], s=46, marker="X", c="black", label=f"collapsed (R < {_threshold(selection)} nats)")
    if any(t.status != "completed" for t in evaluated):
        axes.scatter([], [], s=46, facecolors="none", edgecolors="black", label="censored: stopped early")
    _fronts(axes, evaluated, selection)
    _labels(axes, evaluated, selection)
    _mark_verdict(axes, selection)
    axes.set_xlim(*limits[0])
    axes.set_ylim(*limits[1])
    axes.legend(loc="upper right", fontsize=7, framealpha=0.85)


def _threshold(selection: Selection) -> str:
    return f"{selection.collapse_rate_threshold:g}" if selection.collapse_rate_threshold is not None else "0.1"


def _limits(rates: np.ndarray, distortions: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    # Fitted to the points with a margin, so that a sweep's D spread fills the plot instead of its top tenth.
    r_pad = max(0.08 * float(np.ptp(rates)), 0.05 * max(1.0, float(rates.max())))
    d_pad = max(0.08 * float(np.ptp(distortions)), 0.02 * max(1.0, abs(float(distortions.max()))))
    return (float(rates.min()) - r_pad, float(rates.max()) + r_pad), (
        float(distortions.min()) - d_pad,
        float(distortions.max()) + 2.5 * d_pad,  # room for the legend and labels above the highest point
    )


def _iso_elbo_lines(
    axes: plt.Axes, rates: np.ndarray, distortions: np.ndarray, limits: tuple[tuple[float, float], ...]
) -> None:
    # Lines of slope -1: each is a set of models of equal ELBO = -(D + R) (Alemi et al. 2018).
    totals = rates + distortions
    (r_low, r_high), (d_low, d_high) = limits
    levels = np.linspace(totals.min(), totals.max(), 4) if np.ptp(totals) > 0 else totals[:1]
    r = np.linspace(r_low, r_high, 100)
    for index, total in enumerate(levels):
        d = total - r
        axes.plot(r, d, ":", c="grey", lw=0.8, zorder=1, label="iso-ELBO: D + R = const" if index == 0 else None)
        inside = (d >= d_low) & (d <= 0.93 * d_high + 0.07 * d_low)
        if inside.any():
            # Labelled where the line enters the plot at its top-left, clear of the points and of each other.
            at = int(np.flatnonzero(inside)[0])
            axes.annotate(f"ELBO {-total:.2f}", (r[at], d[at]), fontsize=6.5, color="grey", ha="left", va="bottom",
                          rotation=_slope_angle(axes), rotation_mode="anchor", xytext=(3, -9),
                          textcoords="offset points")  # fmt: skip


def _slope_angle(axes: plt.Axes) -> float:
    # On-screen angle of a slope -1 line, so that each iso-ELBO label lies along its own line.
    (x0, y0), (x1, y1) = axes.transData.transform([(0.0, 0.0), (1.0, -1.0)])
    return float(np.degrees(np.arctan2(y1 - y0, x1 - x0)))


def _fronts(axes: plt.Axes, evaluated: list[TrialOutcome], selection: Selection) -> None:
    by_number = {t.number: t for t in evaluated}
    optimal = [by_number[n] for n in selection.rd_frontier if n in by_number]
    _polyline(axes, selection.front, "-", c="tab:green", lw=1.2, alpha=0.7,
              label="objective-space Pareto front (feasible trials)")  # fmt: skip
    _polyline(axes, optimal, "--", c="black", lw=0.8, alpha=0.6,
              label="RD-optimal trials: none other lower in both R and D")  # fmt: skip


def _polyline(axes: plt.Axes, trials: list[TrialOutcome], style: str, **line: object) -> None:
    # Trials joined in order of rate, under the points.
    if trials:
        ordered = sorted(trials, key=lambda t: t.metrics["rate"])
        xs, ys = [t.metrics["rate"] for t in ordered], [t.metrics["distortion"] for t in ordered]
        axes.plot(xs, ys, style, zorder=2, **line)


def _labels(axes: plt.Axes, evaluated: list[TrialOutcome], selection: Selection) -> None:
    marked = {t.trial_id for t in (selection.max_elbo, selection.recommended) if t is not None}
    for index, trial in enumerate(sorted(evaluated, key=lambda t: (t.metrics["rate"], t.number))):
        if len(evaluated) <= _LABEL_ALL_UP_TO or trial.trial_id in marked:
            # Alternate below/above so that neighbours (collapsed trials pile up at R ~ 0) stay readable.
            axes.annotate(
                f"#{trial.number}",
                (trial.metrics["rate"], trial.metrics["distortion"]),
                fontsize=7,
                xytext=(5, -10) if index % 2 == 0 else (5, 4),
                textcoords="offset points",
            )


def _mark_verdict(axes: plt.Axes, selection: Selection) -> None:
    best = selection.max_elbo
    if best is not None and "rate" in best.metrics:
        state = {True: "collapsed", False: "not collapsed", None: "collapse undetermined"}[selection.max_elbo_collapsed]
        axes.scatter(
            [best.metrics["rate"]],
            [best.metrics["distortion"]],
            s=260,
            marker="s",
            facecolors="none",
            edgecolors="tab:red" if best.collapsed else "tab:orange",
            linewidths=2.0,
            zorder=4,
            label=f"max ELBO: #{best.number}, {state}",
        )
    chosen = selection.recommended
    if chosen is not None and "rate" in chosen.metrics:
        axes.scatter(
            [chosen.metrics["rate"]],
            [chosen.metrics["distortion"]],
            s=220,
            marker="*",
            c="gold",
            edgecolors="black",
            zorder=5,
            label=f"recommended: #{chosen.number}",
        )
