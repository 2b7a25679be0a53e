"""MLflow side of a sweep: one parent run, one nested child run per trial, logged models and the champion alias."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

import rdvae
from rdvae import DatasetInfo, PosteriorMean, load_checkpoint
from workers.registry import register_champion
from workers.results import Selection, SweepResult, TrialOutcome
from workers.spec import SweepSpec

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_TRACKING_URI = "sqlite:///.rdvae/mlflow.db"
CHAMPION_ALIAS = "champion"
TRIAL_TAG = "rdvae.trial_id"
TRIAL_NUMBER_TAG = "rdvae.trial_number"
# MLflow 3 opens experiments without this tag in its GenAI view; training runs belong to the model-development one
TRAINING_EXPERIMENT = {"mlflow.experimentKind": "custom_model_development"}
SWEEP_TAG = "rdvae.sweep_id"
_STATE_FILE = "mlflow.json"
_MAX_TAG = 5000


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The argument, else $MLFLOW_TRACKING_URI, else a SQLite store under .rdvae/ (artifacts in .rdvae/mlartifacts)."""
    return tracking_uri or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI


def _sqlite_artifact_root(uri: str) -> str | None:
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    return (database.parent.resolve() / "mlartifacts").as_uri()


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, list | tuple) else str(value)


def metric_name(key: str) -> str:
    """MLflow's name of a Tune result key: constraint values go under `constraints/`, out of the main charts."""
    return f"constraints/{key.removeprefix('constraint_')}" if key.startswith("constraint_") else key


def trial_run_name(trial_id: str, params: dict[str, Any], number: int | None) -> str:
    """`trial 3 · β=1.22` (the `#` of the CLI tables and the searched knob), else the Tune trial id."""
    if number is None:
        return trial_id
    knobs = [f"{symbol}={params[key]:.3g}" for key, symbol in (("beta", "β"), ("C", "C"))
             if isinstance(params.get(key), int | float)]  # fmt: skip
    return " · ".join([f"trial {number}", *knobs])


def resolved_config(spec: SweepSpec, params: dict[str, Any]) -> dict[str, str]:
    """A trial's full configuration as flat MLflow params: the spec's fields, with the sampled values on top."""
    flat: dict[str, str] = {}
    _flatten("", spec.model_dump(mode="json", exclude={"warm_start_params"}), flat)
    flat.update({key: str(value) for key, value in params.items()})
    return flat


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a Tune result, without Tune's bookkeeping (timestamps, iteration counters)."""
    skip = {
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "pid",
        "training_iteration",
        "time_since_restore",
        "iterations_since_restore",
        "done",
        "timesteps_total",
        "episodes_total",
        "timesteps_since_restore",
    }
    return {
        key: float(value)
        for key, value in result.items()
        if key not in skip and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


class SweepTracker:
    """Writes a sweep to MLflow; safe to re-create on resume (parent run id kept in the sweep dir, child runs
    found by their Tune trial id tag)."""

    def __init__(self, spec: SweepSpec, sweep_id: str, sweep_dir: Path, tracking_uri: str | None = None) -> None:
        self.uri = resolve_tracking_uri(tracking_uri)
        self.spec, self.sweep_id, self.sweep_dir = spec, sweep_id, sweep_dir
        artifact_root = _sqlite_artifact_root(self.uri)
        # mlflow.pytorch.log_model works on the fluent API's tracking URI; a sweep driver tracks one server.
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        experiment = self.client.get_experiment_by_name(spec.mlflow.experiment_name)
        if experiment is None:
            location = f"{artifact_root}/{spec.mlflow.experiment_name}" if artifact_root else None
            self.experiment_id = self.client.create_experiment(
                spec.mlflow.experiment_name, artifact_location=location, tags=TRAINING_EXPERIMENT
            )
        else:
            self.experiment_id = experiment.experiment_id
        # mlflow.pytorch.log_model resumes child runs through the fluent API, which refuses a run outside the
        # process's active experiment (a caller's earlier set_experiment): point it at this sweep's.
        mlflow.set_experiment(experiment_id=self.experiment_id)
        self._children: dict[str, str] = {}
        self._logged_steps: dict[str, dict[str, int]] = {}  # run id -> metric -> last step logged
        self.parent_run_id = self._parent_run()
        # Models are logged off the Tune event loop: serialising and uploading one takes ~1 s, during which
        # the driver would not start the next trial. MLflow's fluent run stack is thread-local.
        self._models = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdvae-models")
        self._pending: dict[str, Future[str]] = {}

    def _parent_run(self) -> str:
        state_path = self.sweep_dir / _STATE_FILE
        if state_path.is_file():
            run_id = json.loads(state_path.read_text())["parent_run_id"]
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {SWEEP_TAG: self.sweep_id, "rdvae.role": "sweep", "rdvae.spec": self.spec.model_dump_json()[:_MAX_TAG]}
        run = self.client.create_run(self.experiment_id, run_name=self.spec.name or self.sweep_id, tags=tags)
        params: dict[str, str] = {}
        _flatten("", self.spec.model_dump(mode="json"), params)
        self.client.log_batch(run.info.run_id, params=[Param(k, v[:_MAX_TAG]) for k, v in sorted(params.items())])
        self.client.log_text(run.info.run_id, self.spec.model_dump_json(indent=2), "spec.json")
        state_path.write_text(json.dumps({"parent_run_id": run.info.run_id, "experiment_id": self.experiment_id}))
        return run.info.run_id

    def child_run(self, trial_id: str, params: dict[str, Any], number: int | None = None) -> str:
        """The child run of a Tune trial, created on first sight and found again after a resume; named like the
        CLI's tables (`trial 3 · β=1.22`) when its `number` is known, with the trial's full resolved config."""
        if trial_id in self._children:
            return self._children[trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}' and tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
        else:
            tags = {
                TRIAL_TAG: trial_id,
                SWEEP_TAG: self.sweep_id,
                "mlflow.parentRunId": self.parent_run_id,
                "rdvae.status": "running",
            }
            tags.update({} if number is None else {TRIAL_NUMBER_TAG: str(number)})
            name = trial_run_name(trial_id, params, number)
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
            flat = resolved_config(self.spec, params)
            batch = [Param(k, v[:_MAX_TAG]) for k, v in sorted(flat.items())]
            for start in range(0, len(batch), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(run_id, params=batch[start : start + 100])
        self._children[trial_id] = run_id
        return run_id

    def log_result(self, trial_id: str, params: dict[str, Any], result: dict[str, Any]) -> None:
        """Per-epoch (and final) held-out metrics at step = epoch."""
        run_id = self.child_run(trial_id, params)
        step = int(result.get("epoch", 0))
        timestamp = int(1000 * float(result.get("timestamp", 0)))
        # the final report repeats the last epoch's metrics at the same step: each (metric, step) is logged once
        logged = self._logged_steps.setdefault(run_id, {})
        values = {metric_name(key): value for key, value in numeric_metrics(result).items()}
        metrics = [Metric(key, value, timestamp, step) for key, value in values.items() if logged.get(key) != step]
        logged.update({metric.key: step for metric in metrics})
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])

    def end_trial(
        self, trial_id: str, params: dict[str, Any], status: str, error: str | None = None, attempts: int = 1
    ) -> None:
        """Tag the trial's status (and error), and close its run."""
        run_id = self.child_run(trial_id, params)
        tags = [RunTag("rdvae.status", status), RunTag("rdvae.attempts", str(attempts))]
        if error:
            tags.append(RunTag("rdvae.error", error[:_MAX_TAG]))
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, status="FAILED" if status == "failed" else "FINISHED")

    def log_model_later(self, trial_id: str, params: dict[str, Any], checkpoint_file: Path) -> None:
        """Start logging a trial's model in the background (see `model_uri`)."""
        if trial_id not in self._pending:
            self.child_run(trial_id, params)
            self._pending[trial_id] = self._models.submit(self.log_model, trial_id, params, checkpoint_file)

    def model_uri(self, trial_id: str, params: dict[str, Any], checkpoint_file: Path) -> str:
        """The trial's model URI: the background upload's result, else (not started, or it failed) log it now."""
        pending = self._pending.pop(trial_id, None)
        if pending is not None and pending.exception() is None:
            return pending.result()
        return self.log_model(trial_id, params, checkpoint_file)

    def close(self) -> None:
        """Wait for background model uploads."""
        self._models.shutdown(wait=True)

    def log_model(self, trial_id: str, params: dict[str, Any], checkpoint_file: Path) -> str:
        """Log a trial's final model (PyTorch flavour, pickled VAE) once; returns its model URI."""
        run_id = self.child_run(trial_id, params)
        run = self.client.get_run(run_id)
        if "rdvae.model_uri" in run.data.tags:
            return run.data.tags["rdvae.model_uri"]
        model, config = load_checkpoint(checkpoint_file)
        servable = PosteriorMean(model.eval())
        example = np.zeros((2, model.input_dim), dtype=np.float32)
        # No input schema: MLflow enforces a tensor input's dtype exactly and would refuse float64 (numpy's default);
        # PosteriorMean casts and checks the [N, D] shape itself; the input example and the metadata give the shape.
        signature = ModelSignature(
            inputs=None,
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, model.config.latent_dim))]),
        )
        status = run.info.status
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                servable,
                name="model",
                signature=signature,
                input_example=example,
                # What the registry compares champions on (the signature carries no input schema, see above).
                metadata={"input_shape": [model.input_dim], "image_shape": list(model.image_shape)},
                serialization_format="pickle",
                # The pickled classes live in rdvae: ship its code so the model loads where rdvae is not installed.
                code_paths=[str(Path(rdvae.__file__).parent)],
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "pydantic"],
            )
            mlflow.log_text(config.model_dump_json(indent=2), "run_config.json")
        self.client.set_tag(run_id, "rdvae.model_uri", info.model_uri)
        if status != "RUNNING":
            self.client.set_terminated(run_id, status=status)
        return info.model_uri

    def finish(self, result: SweepResult, plot_png: bytes) -> None:
        """Parent run: selection summary metrics, the RD plane, pareto.json, the trials table; register the
        recommended model under the spec's name with alias `champion`, tagged with the digest of `result.dataset`."""
        selection = result.selection
        summary = _summary_metrics(result.trials, selection)
        self.client.log_batch(self.parent_run_id, metrics=[Metric(k, v, 0, 0) for k, v in summary.items()])
        self._log_bytes(plot_png, "rd_plane.png")
        self.client.log_text(self.parent_run_id, selection.model_dump_json(indent=2), "pareto.json")
        self.client.log_text(self.parent_run_id, trials_table(result.trials), "trials.csv")
        tags = {
            "rdvae.cancelled": str(result.cancelled).lower(),
            "rdvae.reason": selection.reason[:_MAX_TAG],
            "rdvae.max_elbo_verdict": verdict_tag(selection),
        }
        if selection.notes:
            tags["rdvae.notes"] = " | ".join(selection.notes)[:_MAX_TAG]
        recommended = selection.recommended
        previous = self.client.get_run(self.parent_run_id).data.tags
        if recommended is not None and recommended.model_uri:
            tags["rdvae.recommended_trial"] = recommended.trial_id
            # A resumed sweep that recommends the same trial again keeps its registered version. run_sweep always
            # sets result.dataset: the registry tags a version with the data it was trained on.
            again = previous.get("rdvae.recommended_trial") == recommended.trial_id and "rdvae.champion" in previous
            if not again and result.dataset is not None:
                tags["rdvae.champion"] = register_champion(
                    self.client, self.spec, self.sweep_id, recommended, result.dataset.digest
                )
        self.client.log_batch(self.parent_run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self._close_orphans({trial.trial_id for trial in result.trials})
        self.client.set_terminated(self.parent_run_id, status="KILLED" if result.cancelled else "FINISHED")

    def _close_orphans(self, trial_ids: set[str]) -> None:
        """A driver killed mid-trial leaves that trial's child run RUNNING while the resumed sweep runs the trial
        under a new id: such runs end as KILLED, tagged, so the UI shows no phantom live trial."""
        children = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and attributes.status = 'RUNNING'",
        )
        for run in children:
            if run.data.tags.get(TRIAL_TAG) not in trial_ids:
                self.client.set_tag(run.info.run_id, "rdvae.orphaned", "driver killed mid-trial; trial re-run")
                self.client.set_terminated(run.info.run_id, status="KILLED")

    def _log_bytes(self, data: bytes, name: str) -> None:
        path = self.sweep_dir / name
        path.write_bytes(data)
        self.client.log_artifact(self.parent_run_id, str(path))


def _summary_metrics(trials: list[TrialOutcome], selection: Selection) -> dict[str, float]:
    counts = {status: sum(t.status == status for t in trials) for status in ("completed", "stopped", "failed")}
    summary = {f"n_{status}": float(count) for status, count in counts.items()}
    summary["n_trials"] = float(len(trials))
    summary["n_feasible"] = float(sum(bool(t.feasible) for t in trials))
    summary["n_collapsed"] = float(sum(bool(t.collapsed) for t in trials))
    summary["front_size"] = float(len(selection.front))
    if selection.hypervolume is not None:
        summary["hypervolume"] = selection.hypervolume
    if selection.recommended is not None:
        for key, value in selection.recommended.metrics.items():
            summary[f"recommended_{key}"] = value
    if selection.max_elbo is not None:
        summary["max_elbo"] = selection.max_elbo.metrics["elbo"]
        summary["max_elbo_trial"] = float(selection.max_elbo.number)
        if selection.max_elbo_collapsed is not None:  # absent: undetermined (censored trials)
            summary["max_elbo_collapsed"] = float(selection.max_elbo_collapsed)
    if selection.max_iwae is not None:
        summary["max_iwae"] = selection.max_iwae.metrics["iwae_ll"]
        summary["max_iwae_trial"] = float(selection.max_iwae.number)
    if selection.bounds_disagree is not None:
        summary["bounds_disagree"] = float(selection.bounds_disagree)
    for key, value in (("elbo_gap", selection.elbo_gap), ("elbo_gap_se", selection.elbo_gap_se)):
        if value is not None:
            summary[key] = value
    if selection.iwae_gap is not None:
        summary["iwae_gap"] = selection.iwae_gap.gap
        if selection.iwae_gap.standard_error is not None:
            summary["iwae_gap_se"] = selection.iwae_gap.standard_error
    summary["n_censored"] = float(len(selection.censored_trials))
    return {k: v for k, v in summary.items() if math.isfinite(v)}


def verdict_tag(selection: Selection) -> str:
    """`collapsed`, `not collapsed` or `undetermined`: whether the max-ELBO model collapsed."""
    return {True: "collapsed", False: "not collapsed", None: "undetermined"}[selection.max_elbo_collapsed]


def trials_table(trials: list[TrialOutcome]) -> str:
    """CSV: one row per trial with its parameters, final held-out metrics and verdicts."""
    param_keys = sorted({key for t in trials for key in t.params})
    metric_keys = sorted({key for t in trials for key in t.metrics if not key.startswith("constraint_")})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["trial_id", "number", "status", "collapsed", "feasible", "attempts", "error", *param_keys, *metric_keys]
    )
    for t in sorted(trials, key=lambda trial: trial.number):
        writer.writerow(
            [
                t.trial_id,
                t.number,
                t.status,
                t.collapsed,
                t.feasible,
                t.attempts,
                t.error or "",
                *(t.params.get(k, "") for k in param_keys),
                *(t.metrics.get(k, "") for k in metric_keys),
            ]
        )
    return buffer.getvalue()


def log_dataset(client: MlflowClient, run_id: str, info: DatasetInfo, features: np.ndarray) -> None:
    """The sweep's data set as an MLflow dataset input of its parent run, once (a resumed sweep does not repeat it):
    name, digest (MLflow keeps 32 hex digits; the full `sha256:` digest, shape and likelihood are input tags and
    run tags), the source (the path relative to the data root, or the built-in set's name) and the features' schema.
    `features: [N, D]` is what the trials train on."""
    short_digest = info.digest.removeprefix("sha256:")[:32]
    run = client.get_run(run_id)
    if any(entry.dataset.digest == short_digest for entry in run.inputs.dataset_inputs):
        return
    from mlflow.data.code_dataset_source import CodeDatasetSource

    source = info.path if info.path else CodeDatasetSource({"rdvae.dataset": info.name})
    name = info.name if not info.path else f"{info.path}{f':{info.key}' if info.key else ''}"
    dataset = mlflow.data.from_numpy(features, source=source, name=name[:_MAX_TAG], digest=short_digest)
    described = {
        "rdvae.dataset.digest": info.digest,
        "rdvae.dataset.shape": json.dumps(info.shape),
        "rdvae.dataset.likelihood": info.likelihood,
        "rdvae.dataset.binarization": info.binarization,
    }
    tags = [InputTag("mlflow.data.context", "training"), *(InputTag(k, v) for k, v in described.items())]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in described.items()])
