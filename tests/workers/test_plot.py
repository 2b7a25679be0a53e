"""The RD plane a researcher would publish: fitted axes, the verdict marked, families, censored trials, labels."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from test_verdict import SPEC, STOPPED, trial

from workers.plot import _draw, family, render_rd_plane
from workers.selection import annotate, select

RAW = [
    trial(0, 1.0, -23.52, 3.5, 8, iwae=-22.93),
    trial(1, 2.0, -23.08, 0.017, 0, iwae=-22.99),
    trial(2, 0.5, -25.40, 13.4, 8, iwae=-23.7),
    trial(3, 4.0, -26.00, 0.01, 0, status="stopped", epochs=16),
]
RAW[2].params["decoder"] = "mlp"
TRIALS = [annotate(SPEC, t) for t in RAW]  # as a sweep's result holds them: collapsed by the spec's one rule


@pytest.fixture
def axes() -> plt.Axes:
    figure, axes = plt.subplots()
    yield axes
    plt.close(figure)


def _legend(axes: plt.Axes) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]


def test_the_collapsed_max_elbo_trial_the_fronts_and_censored_trials_are_named(axes: plt.Axes) -> None:
    selection = select(SPEC, TRIALS)
    _draw(axes, TRIALS, selection)
    legend = _legend(axes)
    assert "max ELBO: #1, collapsed" in legend and "recommended: #0" in legend
    assert "censored: stopped early" in legend and "collapsed (R < 0.1 nats)" in legend
    assert "objective-space Pareto front (feasible trials)" in legend
    assert "RD-optimal trials: none other lower in both R and D" in legend
    assert {"β-VAE", "mlp · β-VAE"} <= set(legend)  # one colour per family
    texts = [text.get_text() for text in axes.texts]
    assert {"#0", "#1", "#2", "#3"} <= set(texts)
    assert any(text.startswith("ELBO -23.08") for text in texts)  # labelled iso-ELBO line through the best point
    # Axes fitted to the data, not starting at D = 0.
    bottom, top = axes.get_ylim()
    distortions = [t.metrics["distortion"] for t in TRIALS]
    assert min(distortions) - 2.0 < bottom < min(distortions) and top > max(distortions)
    censored = [c for c in axes.collections if len(c.get_offsets()) == 1 and c.get_offsets()[0][1] == distortions[3]]
    assert any(len(c.get_facecolor()) == 0 or c.get_facecolor()[0][3] == 0 for c in censored)  # hollow


def test_an_undetermined_verdict_is_drawn_as_such(axes: plt.Axes) -> None:
    _draw(axes, [annotate(SPEC, t) for t in STOPPED], select(SPEC, STOPPED))
    assert "max ELBO: #0, collapse undetermined" in _legend(axes)


def test_families_combine_decoder_and_objective() -> None:
    assert family(trial(0, 1.0, -1.0, 1.0, 1)) == "β-VAE"
    capacity = trial(1, 1.0, -1.0, 1.0, 1)
    capacity.params.update({"objective": "capacity", "decoder": "made"})
    assert family(capacity) == "made · capacity"


def test_render_returns_a_png_with_its_title() -> None:
    png = render_rd_plane(TRIALS, select(SPEC, TRIALS), title="digits-collapse · digits")
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert render_rd_plane([], select(SPEC, [])).startswith(b"\x89PNG")
