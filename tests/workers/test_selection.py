"""Selection on hand-built outcomes: feasibility, Pareto front, hypervolume, recommendation and its reason."""

from __future__ import annotations

import itertools
import random

import pytest

from workers import SweepSpec, TrialOutcome
from workers.selection import dominates, hypervolume, pareto_front, select

SPEC = SweepSpec.model_validate(
    {
        "objectives": [{"metric": "elbo"}, {"metric": "active_units"}],
        "constraints": [{"metric": "active_units", "op": ">=", "value": 2}],
    }
)


def outcome(number: int, elbo: float, units: float, rate: float, status: str = "completed") -> TrialOutcome:
    collapsed = 1.0 if rate < 0.1 else 0.0
    metrics = {"elbo": elbo, "active_units": units, "rate": rate, "distortion": -elbo - rate, "collapsed": collapsed}
    return TrialOutcome(trial_id=f"t{number}", number=number, status=status, params={"beta": 1.0}, metrics=metrics)


TRIALS = [
    outcome(0, -40.0, 0, 0.01),  # the max-ELBO model, collapsed
    outcome(1, -42.0, 3, 4.0),
    outcome(2, -43.0, 6, 9.0),
    outcome(3, -44.0, 4, 7.0),  # dominated by trial 2
    outcome(4, -41.0, 1, 1.0),  # better ELBO, but violates active_units >= 2
    TrialOutcome(trial_id="t5", number=5, status="failed", error="TrainingDivergedError: non-finite"),
]


def test_front_is_the_non_dominated_feasible_trials() -> None:
    selection = select(SPEC, TRIALS)
    assert sorted(t.number for t in selection.front) == [1, 2]
    points = [(t.metrics["elbo"], t.metrics["active_units"]) for t in selection.front]
    assert not any(dominates(a, b) for a, b in itertools.permutations(points, 2))


def test_recommendation_is_best_feasible_elbo_and_reports_the_collapsed_max_elbo() -> None:
    selection = select(SPEC, TRIALS)
    assert selection.recommended is not None and selection.recommended.number == 1
    assert selection.max_elbo is not None and selection.max_elbo.number == 0
    assert selection.max_elbo_collapsed is True
    assert selection.elbo_gap == pytest.approx(2.0)
    assert "collapsed" in selection.reason and "active_units >= 2" in selection.reason


def test_hypervolume_against_the_documented_reference() -> None:
    selection = select(SPEC, TRIALS)
    # Reference: worst evaluated ELBO (-44) and 0 active units. Front (-42, 3), (-43, 6):
    # strip of trial 1: (−42 − −44) * 3 = 6; strip of trial 2: (−43 − −44) * (6 − 3) = 3.
    assert selection.reference_point == [-44.0, 0.0]
    assert selection.hypervolume == pytest.approx(9.0)


def test_no_feasible_trial_gives_no_recommendation_and_says_why() -> None:
    selection = select(SPEC, [TRIALS[0], TRIALS[5]])
    assert selection.recommended is None and selection.front == []
    assert "no recommendation" in selection.reason.lower()
    assert "none of the evaluated trials is feasible" in selection.reason


def test_pareto_front_and_hypervolume_primitives() -> None:
    points = [(1.0, 5.0), (2.0, 4.0), (1.5, 3.0), (3.0, 1.0)]
    assert pareto_front(points) == [0, 1, 3]
    assert hypervolume(points, (0.0, 0.0)) == pytest.approx(3 * 1 + 2 * (4 - 1) + 1 * (5 - 4))
    assert hypervolume([(5.0,)], (2.0,)) == 3.0
    assert hypervolume([(1.0, 1.0)], (2.0, 0.0)) == 0.0


def _grid_hypervolume(points: list[tuple[float, float]], reference: tuple[float, float], cells: int = 400) -> float:
    """Brute force: the fraction of a fine grid over [reference, max] dominated by some point, times its area."""
    top = (max(p[0] for p in points), max(p[1] for p in points))
    width, height = (top[0] - reference[0]) / cells, (top[1] - reference[1]) / cells
    covered = 0
    for i in range(cells):
        for j in range(cells):
            x, y = reference[0] + (i + 0.5) * width, reference[1] + (j + 0.5) * height
            covered += any(p[0] >= x and p[1] >= y for p in points)
    return covered * width * height


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hypervolume_matches_a_brute_force_count_on_random_points(seed: int) -> None:
    generator = random.Random(seed)
    points = [(generator.uniform(-5, 5), generator.uniform(0, 10)) for _ in range(12)]
    reference = (-5.0, 0.0)
    exact = hypervolume(points, reference)
    assert exact == pytest.approx(_grid_hypervolume(points, reference), rel=0.02)
    # Only the front matters: dominated points add nothing, and the order of the points is irrelevant.
    front = [points[i] for i in pareto_front(points)]
    assert hypervolume(front, reference) == pytest.approx(exact)
    assert hypervolume(list(reversed(points)), reference) == pytest.approx(exact)
    for i, p in enumerate(points):
        dominated = any(dominates(q, p) for j, q in enumerate(points) if j != i)
        assert (i in pareto_front(points)) == (not dominated)


def test_minimised_objectives_are_negated_before_the_front() -> None:
    spec = SweepSpec.model_validate(
        {"objectives": [{"metric": "elbo"}, {"metric": "rate", "direction": "minimize"}], "constraints": []}
    )
    trials = [outcome(0, -40.0, 3, 5.0), outcome(1, -41.0, 3, 2.0), outcome(2, -42.0, 3, 6.0)]
    selection = select(spec, trials)
    # Trial 2 is worse in ELBO and has a higher rate than trial 0: dominated when rate is minimised.
    assert sorted(t.number for t in selection.front) == [0, 1]
