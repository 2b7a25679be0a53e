"""Early stopping without a cluster: the collapse stopper, ASHA's rungs and the final report, and their wiring."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from workers import SweepSpec
from workers.stoppers import CancelStopper, CollapseStopper
from workers.sweep import _scheduler, _stopper


def epoch_result(epoch: int, rate: float, elbo: float = -40.0, final: int = 0) -> dict[str, float]:
    return {"epoch": epoch, "rate": rate, "elbo": elbo, "final": final}


def test_collapse_stopper_waits_for_warmup_and_spares_the_final_report() -> None:
    stopper = CollapseStopper(warmup_epochs=3, threshold=0.1)
    assert not stopper("t", epoch_result(2, rate=0.0))  # still warming up
    assert stopper("t", epoch_result(3, rate=0.05))
    assert not stopper("t", epoch_result(3, rate=0.5))  # not collapsed
    assert not stopper("t", epoch_result(5, rate=0.0, final=1))  # the final report always reaches the searcher
    assert not stopper("t", {"epoch": 9})
    assert not stopper.stop_all()


def _stoppers(spec: SweepSpec) -> list[object]:
    return list(_stopper(spec, "s")._stoppers)


def test_the_collapse_stopper_runs_only_when_the_spec_asks_for_a_non_collapsed_model() -> None:
    asks = SweepSpec.model_validate(
        {"collapse_rate_threshold": 0.2, "early_stopping": {"stop_collapsed": True, "collapse_warmup_epochs": 4}}
    )
    kinds = [type(s) for s in _stoppers(asks)]
    assert kinds == [CancelStopper, CollapseStopper]
    collapse = _stoppers(asks)[1]
    assert (collapse.warmup_epochs, collapse.threshold) == (4, 0.2)
    # Only ELBO, no constraint: a collapsed model may be the answer (auto-decoding), so none is cut short.
    elbo_only = SweepSpec.model_validate(
        {"objectives": [{"metric": "elbo"}], "constraints": [], "early_stopping": {"stop_collapsed": True}}
    )
    assert [type(s) for s in _stoppers(elbo_only)] == [CancelStopper]
    # Off by default: a stopped collapsed trial is censored, and censoring biases the max-ELBO verdict.
    assert [type(s) for s in _stoppers(SweepSpec())] == [CancelStopper]


def test_asha_ranks_on_held_out_elbo_and_never_cuts_the_final_report() -> None:
    spec = SweepSpec.model_validate(
        {"epochs": 2, "early_stopping": {"asha": True, "grace_period": 1, "reduction_factor": 2}}
    )
    scheduler = _scheduler(spec, n_train=1437)
    assert isinstance(scheduler, ASHAScheduler)
    good, bad = SimpleNamespace(trial_id="good", config={}), SimpleNamespace(trial_id="bad", config={})
    for trial in (good, bad):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, good, epoch_result(1, 3.0, elbo=-40.0)) == TrialScheduler.CONTINUE
    # Higher ELBO is better (mode max): the worse trial is cut at the first rung.
    assert scheduler.on_trial_result(None, bad, epoch_result(1, 3.0, elbo=-60.0)) == TrialScheduler.STOP
    # The last epoch and the final report (same epoch again, with IWAE and test metrics) must both go through:
    # with max_t = epochs the trial would be stopped before its final report.
    assert scheduler.on_trial_result(None, good, epoch_result(2, 3.0, elbo=-39.0)) == TrialScheduler.CONTINUE
    final = epoch_result(2, 3.0, elbo=-39.0, final=1)
    assert scheduler.on_trial_result(None, good, final) == TrialScheduler.CONTINUE


def test_asha_is_off_by_default() -> None:
    assert isinstance(_scheduler(SweepSpec(), n_train=1437), FIFOScheduler)


@pytest.mark.parametrize("epochs", [1, 3])
def test_asha_grace_period_never_exceeds_the_epochs(epochs: int) -> None:
    spec = SweepSpec.model_validate({"epochs": epochs, "early_stopping": {"asha": True, "grace_period": 5}})
    scheduler = _scheduler(spec, n_train=1437)
    assert isinstance(scheduler, ASHAScheduler)
    # A grace period past the last epoch would put ASHA's first rung where no report ever arrives.
    assert scheduler._max_t == epochs + 1
    assert min(milestone for milestone, _ in scheduler._brackets[0]._rungs) == epochs


def _first_rung(scheduler: TrialScheduler) -> int:
    assert isinstance(scheduler, ASHAScheduler)
    return min(milestone for milestone, _ in scheduler._brackets[0]._rungs)


def test_no_scheduler_judges_a_capacity_trial_before_its_ramp_ends() -> None:
    early = {"asha": True, "grace_period": 2, "stop_collapsed": True, "collapse_warmup_epochs": 2}
    beta = SweepSpec.model_validate({"epochs": 20, "early_stopping": early})
    capacity = SweepSpec.model_validate(
        {"epochs": 20, "search_space": {"objective": ["beta", "capacity"]}, "early_stopping": early}
    )
    # Ramp: half of 20 epochs (default capacity_anneal_fraction 0.5): ASHA's first rung waits for epoch 10.
    assert _first_rung(_scheduler(beta, n_train=1437)) == 2
    assert _first_rung(_scheduler(capacity, n_train=1437)) == 10
    stopper = _stoppers(capacity)[1]
    ramping = {**epoch_result(5, rate=0.0), "annealing": 1.0}
    assert not stopper("t", ramping)  # C_t still small: collapsed by design
    assert stopper("t", {**ramping, "annealing": 0.0})
