"""End to end: a real sweep on digits against a Ray head started with `ray start` and a real MLflow server."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import matplotlib.image
import mlflow
import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from rdvae import evaluate, load_data
from workers import SweepProgress, SweepResult, SweepSpec, run_sweep
from workers.search import ConstrainedOptunaSearch, constraint_count
from workers.selection import dominates, objective_vector

pytestmark = pytest.mark.slow

SPEC = SweepSpec.model_validate(
    {
        "name": "e2e",
        "dataset": "digits",
        "model": {"latent_dim": 8, "hidden_dims": [32]},
        "search_space": {"beta": {"low": 0.05, "high": 5.0}},
        "n_trials": 6,
        "max_concurrent_trials": 2,
        "epochs": 3,
        "iwae_samples": 5,
        "objectives": [{"metric": "elbo"}, {"metric": "active_units"}],
        "constraints": [{"metric": "active_units", "op": ">=", "value": 2}],
        "sampler": "nsga2",
        "early_stopping": {"grace_period": 2},
        "mlflow": {"experiment_name": "e2e", "registered_model_name": "e2e-vae"},
    }
)


@pytest.fixture(scope="module")
def sweep(
    ray_cluster: str, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SweepResult, list[SweepProgress]]]:
    progress: list[SweepProgress] = []
    result = run_sweep(
        SPEC,
        sweep_id="e2e",
        storage_root=tmp_path_factory.mktemp("sweeps"),
        ray_address=ray_cluster,
        tracking_uri=mlflow_server,
        on_progress=progress.append,
    )
    yield result, progress


def test_every_trial_ran_and_progress_was_reported(sweep: tuple[SweepResult, list[SweepProgress]]) -> None:
    result, progress = sweep
    assert len(result.trials) == SPEC.n_trials
    assert len({t.trial_id for t in result.trials}) == SPEC.n_trials
    assert all(t.status in ("completed", "stopped") for t in result.trials)
    assert progress[-1].completed + progress[-1].stopped == SPEC.n_trials
    assert not result.cancelled


def test_nested_child_runs_hold_params_and_per_epoch_metrics(
    sweep: tuple[SweepResult, list[SweepProgress]], mlflow_server: str
) -> None:
    result, _ = sweep
    client = MlflowClient(mlflow_server)
    children = client.search_runs(
        [result.mlflow_experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.mlflow_parent_run_id}'"
    )
    assert len(children) == SPEC.n_trials
    for child in children:
        assert float(child.data.params["beta"]) > 0
        for key in ("rate", "distortion", "elbo", "active_units", "mutual_info", "marginal_kl"):
            assert key in child.data.metrics
        history = client.get_metric_history(child.info.run_id, "elbo")
        assert {m.step for m in history} >= {1}
        if child.data.tags["rdvae.status"] == "completed":
            assert "iwae_ll" in child.data.metrics
            assert {m.step for m in history} == {1, 2, 3}
    parent = client.get_run(result.mlflow_parent_run_id)
    assert parent.data.metrics["n_trials"] == SPEC.n_trials
    assert "hypervolume" in parent.data.metrics
    # The verdict travels with the parent run: in words, as a tag a user can filter on, and as metrics.
    selection = result.selection
    verdict = {True: "collapsed", False: "not collapsed", None: "undetermined"}[selection.max_elbo_collapsed]
    assert parent.data.tags["rdvae.max_elbo_verdict"] == verdict
    assert parent.data.tags["rdvae.reason"] == selection.reason
    assert parent.data.metrics["n_censored"] == len(selection.censored_trials)
    assert parent.data.metrics["max_iwae"] == pytest.approx(selection.max_iwae.metrics["iwae_ll"])


def test_front_is_non_dominated_and_recommendation_is_feasible(sweep: tuple[SweepResult, list[SweepProgress]]) -> None:
    result, _ = sweep
    selection = result.selection
    assert selection.front and selection.recommended is not None
    points = [objective_vector(SPEC, t.metrics) for t in selection.front]
    assert not any(dominates(a, b) for a, b in itertools.permutations(points, 2))
    feasible = [t for t in result.trials if t.feasible]
    for trial in feasible:
        vector = objective_vector(SPEC, trial.metrics)
        assert vector in points or any(dominates(p, vector) for p in points)
    recommended = selection.recommended
    assert recommended.metrics["active_units"] >= 2 and not recommended.collapsed
    assert recommended.metrics["elbo"] == max(t.metrics["elbo"] for t in feasible)
    assert selection.max_elbo is not None and selection.elbo_gap is not None and selection.elbo_gap >= 0
    assert selection.hypervolume is not None and selection.hypervolume > 0


def test_champion_loads_from_the_registry_and_reproduces_its_elbo(
    sweep: tuple[SweepResult, list[SweepProgress]], mlflow_server: str
) -> None:
    result, _ = sweep
    recommended = result.selection.recommended
    assert recommended is not None and recommended.mlflow_run_id is not None
    mlflow.set_tracking_uri(mlflow_server)
    uri = f"models:/{SPEC.mlflow.registered_model_name}@champion"
    model = mlflow.pytorch.load_model(uri)
    logged = MlflowClient(mlflow_server).get_run(recommended.mlflow_run_id).data.metrics["elbo"]
    validation = load_data(SPEC.dataset).validation
    # The final ELBO is estimated from the IWAE draws (k = iwae_samples per example): evaluated the same way.
    reproduced = evaluate(model.vae, validation, iwae_samples=SPEC.iwae_samples, seed=SPEC.seed).elbo
    assert reproduced == pytest.approx(logged, abs=1e-3)
    # The same model served through MLflow's generic interface returns the posterior means, one row per input.
    served = mlflow.pyfunc.load_model(uri).predict(validation[:5].numpy())
    assert served.shape == (5, SPEC.model.latent_dim) and served.dtype == np.float32
    # numpy's default float64 is served too, to the same codes; a wrong width is refused in one line.
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert np.allclose(pyfunc.predict(validation[:5].numpy().astype(np.float64)), served, atol=1e-6)
    with pytest.raises(Exception, match=r"expected inputs of shape \[N, 64\], got \[5, 63\]") as refused:
        pyfunc.predict(validation[:5, :63].numpy())
    assert len(str(refused.value)) < 500
    assert np.allclose(served, model.vae.encode(validation[:5])[0].detach().numpy(), atol=1e-5)


def test_rd_plane_artifact_is_a_png(
    sweep: tuple[SweepResult, list[SweepProgress]], mlflow_server: str, tmp_path: Path
) -> None:
    result, _ = sweep
    client = MlflowClient(mlflow_server)
    names = {a.path for a in client.list_artifacts(result.mlflow_parent_run_id)}
    assert {"rd_plane.png", "pareto.json", "trials.csv"} <= names
    path = client.download_artifacts(result.mlflow_parent_run_id, "rd_plane.png", str(tmp_path))
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[0] > 100


def test_the_optuna_study_saw_every_trial_with_its_constraint_values(
    sweep: tuple[SweepResult, list[SweepProgress]],
) -> None:
    # The searcher state Tune saved with the sweep: each trial, stopped early or not, reached Optuna as COMPLETE
    # with all constraint values, and the collapsed ones as infeasible (Optuna counts a trial without any as feasible).
    result, _ = sweep
    assert result.storage_path is not None
    search = ConstrainedOptunaSearch(SPEC)
    search.restore_from_dir(result.storage_path)
    studied = search._ot_study.get_trials()
    assert len(studied) == SPEC.n_trials
    by_elbo = {round(t.values[0], 6): t for t in studied}
    for trial in result.trials:
        ot_trial = by_elbo[round(trial.metrics["elbo"], 6)]
        assert ot_trial.state == optuna.trial.TrialState.COMPLETE
        assert ot_trial.values == [trial.metrics["elbo"], trial.metrics["active_units"]]
        assert len(ot_trial.constraints) == constraint_count(SPEC)
        assert all(v <= 0 for v in ot_trial.constraints.values()) == bool(trial.feasible), trial
