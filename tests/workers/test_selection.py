"""Selection on hand-built outcomes: feasibility, Pareto front, hypervolume, recommendation and its reason."""

from __future__ import annotations

import itertools

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
    assert "no recommendation" in selection.reason


def test_pareto_front_and_hypervolume_primitives() -> None:
    points = [(1.0, 5.0), (2.0, 4.0), (1.5, 3.0), (3.0, 1.0)]
    assert pareto_front(points) == [0, 1, 3]
    assert hypervolume(points, (0.0, 0.0)) == pytest.approx(3 * 1 + 2 * (4 - 1) + 1 * (5 - 4))
    assert hypervolume([(5.0,)], (2.0,)) == 3.0
    assert hypervolume([(1.0, 1.0)], (2.0, 0.0)) == 0.0
