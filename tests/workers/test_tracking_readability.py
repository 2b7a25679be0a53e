"""What a person sees in MLflow (real server): a training experiment, child runs named like the CLI's `#`, the full
config on every child, constraint metrics under `constraints/`, and each metric step logged once."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from rdvae import load_data
from workers.datasets import check_sweep_data
from workers.spec import SweepSpec
from workers.tracking import SweepTracker, log_dataset

pytestmark = pytest.mark.slow
SPEC = SweepSpec.model_validate({"dataset": "digits", "n_trials": 2, "epochs": 2,
                                 "mlflow": {"experiment_name": "readability"}})  # fmt: skip


def test_child_runs_are_readable(mlflow_server: str, tmp_path: Path) -> None:
    tracker = SweepTracker(SPEC, "readable", tmp_path, mlflow_server)
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment(tracker.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not MLflow 3's GenAI view

    params = {"objective": "beta", "beta": 1.2234}
    run_id = tracker.child_run("abc123", params, number=3)
    last_epoch = {"epoch": 2, "elbo": -40.0, "rate": 3.0, "timestamp": 1.0}
    tracker.log_result("abc123", params, {**last_epoch, "final": 0})
    tracker.log_result("abc123", params, {**last_epoch, "final": 1, "iwae_ll": -39.0, "constraint_0": -2.0})
    tracker.close()

    run = client.get_run(run_id)
    assert run.info.run_name == "trial 3 · β=1.22" and run.data.tags["rdvae.trial_number"] == "3"
    assert run.data.params["beta"] == "1.2234" and run.data.params["epochs"] == "2"
    assert run.data.params["model.latent_dim"] == "16" and run.data.params["dataset.name"] == "digits"
    assert len(client.get_metric_history(run_id, "elbo")) == 1  # the final report used to log epoch 2 again
    assert "iwae_ll" in run.data.metrics and run.data.metrics["constraints/0"] == -2.0
    assert not any(key.startswith("constraint_") for key in run.data.metrics)
    info = check_sweep_data(SPEC)
    log_dataset(client, tracker.parent_run_id, info, load_data(SPEC.dataset).train.numpy())  # what run_sweep does
    (dataset,) = client.get_run(tracker.parent_run_id).inputs.dataset_inputs  # the sweep's data lineage
    assert dataset.dataset.name == "digits" and dataset.dataset.digest == info.digest.removeprefix("sha256:")[:32]
