"""The Optuna side without Ray: the define-by-run space, warm starts, constraints and the trial's rdvae config."""

from __future__ import annotations

import optuna
import pytest

from workers import SweepSpec
from workers.search import ConstrainedOptunaSearch, grid_size, warm_start_points
from workers.trainable import run_config

BOTH = SweepSpec.model_validate(
    {
        "search_space": {
            "objective": ["beta", "capacity"],
            "beta": {"low": 0.1, "high": 2.0},
            "C": {"low": 0, "high": 9},
        },
        "warm_start_params": [{"objective": "beta", "beta": 5.0}, {"objective": "capacity", "C": 3.0}],
        "sampler": "tpe",
    }
)


def test_warm_start_points_are_clipped_and_suggested_first() -> None:
    assert warm_start_points(BOTH) == [{"objective": "beta", "beta": 2.0}, {"objective": "capacity", "C": 3.0}]
    search = ConstrainedOptunaSearch(BOTH)
    assert search.suggest("a") == {"objective": "beta", "beta": 2.0}
    assert search.suggest("b") == {"objective": "capacity", "C": 3.0}
    third = search.suggest("c")
    assert third["objective"] in ("beta", "capacity")
    assert 0.1 <= third.get("beta", 1.0) <= 2.0 and 0 <= third.get("C", 0.0) <= 9


def test_a_warm_start_latent_dim_given_as_a_float_becomes_the_int_choice() -> None:
    spec = SweepSpec.model_validate(
        {"search_space": {"latent_dim": [8, 16]}, "warm_start_params": [{"beta": 1.0, "latent_dim": 16.0}]}
    )
    (point,) = warm_start_points(spec)
    assert point["latent_dim"] == 16 and type(point["latent_dim"]) is int  # the strict ModelConfig takes it
    assert run_config(spec, {"beta": 1.0, **point}).model.latent_dim == 16


def test_constraint_values_reach_the_optuna_trial() -> None:
    search = ConstrainedOptunaSearch(BOTH)
    search.suggest("a")
    metrics = {"elbo": -40.0, "active_units": 0.0, "collapsed": 1.0}
    violations = BOTH.constraint_violations(metrics)
    assert violations == [1.0, 1.0]  # default active_units >= 1 fails by 1; the model is collapsed
    result = {**metrics, **{f"constraint_{i}": v for i, v in enumerate(violations)}}
    search.on_trial_complete("a", result=result)
    trial = search._ot_study.get_trials()[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.values == [-40.0, 0.0]
    assert trial.constraints == {"constraint_0": 1.0, "constraint_1": 1.0}


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "gp", "random", "grid"])
def test_every_sampler_suggests_in_range(sampler: str) -> None:
    spec = SweepSpec.model_validate({"search_space": {"beta": {"low": 0.5, "high": 4.0}}, "sampler": sampler})
    search = ConstrainedOptunaSearch(spec)
    for index in range(3):
        params = search.suggest(str(index))
        assert 0.5 <= params["beta"] <= 4.0 + 1e-9 and params["objective"] == "beta"
    if sampler == "grid":
        assert grid_size(spec) == spec.grid_points


def test_run_config_maps_params_to_the_rdvae_objective() -> None:
    spec = SweepSpec.model_validate(
        {"search_space": {"objective": ["capacity"], "gamma": 50.0, "latent_dim": [4, 8]}, "learning_rate": 0.002}
    )
    config = run_config(spec, {"objective": "capacity", "C": 7.5, "latent_dim": 4})
    assert config.objective.kind == "capacity" and config.objective.capacity == 7.5 and config.objective.gamma == 50
    assert config.model.latent_dim == 4 and config.train.learning_rate == 0.002 and config.train.seed == spec.seed
    assert run_config(BOTH, {"objective": "beta", "beta": 0.3}).objective.beta == 0.3


def test_a_trial_stopped_while_collapsed_is_infeasible_for_the_sampler() -> None:
    # The collapse stopper (or ASHA) ends a trial before its final report: the last result has held-out metrics
    # but no constraint_i. Optuna counts a trial without constraint values as feasible, so the searcher must
    # derive them from the metrics, or NSGA-II would breed from collapsed models.
    spec = SweepSpec.model_validate({"search_space": {"beta": {"low": 0.5, "high": 4.0}}, "sampler": "nsga2"})
    search = ConstrainedOptunaSearch(spec)
    search.suggest("stopped")
    search.suggest("healthy")
    collapsed = {"elbo": -40.0, "active_units": 0.0, "rate": 0.01, "collapsed": 1.0, "final": 0, "epoch": 3}
    search.on_trial_complete("stopped", result=collapsed)
    healthy = {"elbo": -42.0, "active_units": 3.0, "rate": 4.0, "collapsed": 0.0, "final": 0, "epoch": 3}
    search.on_trial_complete("healthy", result=healthy)
    stopped_trial, healthy_trial = search._ot_study.get_trials()
    assert stopped_trial.state == optuna.trial.TrialState.COMPLETE
    assert stopped_trial.constraints == {"constraint_0": 1.0, "constraint_1": 1.0}
    assert healthy_trial.constraints == {"constraint_0": -2.0, "constraint_1": -1.0}


def test_a_stopped_trial_without_a_final_only_metric_is_infeasible_and_pruned() -> None:
    # iwae_ll exists only in the final report: a trial stopped early cannot be scored on it, nor checked against
    # a constraint on it; multi-objective OptunaSearch would pass None to study.tell and leave the trial RUNNING.
    spec = SweepSpec.model_validate(
        {
            "objectives": [{"metric": "iwae_ll"}, {"metric": "active_units"}],
            "constraints": [{"metric": "iwae_ll", "op": ">=", "value": -100.0}],
            "sampler": "nsga2",
        }
    )
    search = ConstrainedOptunaSearch(spec)
    search.suggest("a")
    search.on_trial_complete("a", result={"elbo": -40.0, "active_units": 2.0, "rate": 3.0, "collapsed": 0.0})
    trial = search._ot_study.get_trials()[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.constraints["constraint_0"] > 0
