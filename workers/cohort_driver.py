"""Driver side of a cohort sweep: the Tuner of cohorts, MLflow per member, and each cohort expanded into its trials.

A cohort is one Tune trial; a member is one trial of the sweep, `<tune trial id>-m<index>`, numbered by its Optuna
trial. Every member gets its own MLflow child run (per-epoch metrics, final metrics, model, status) and its own
TrialOutcome, so selection, the plot, the CLI and `/trials` see the same rows as in a one-trial-per-process sweep.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

from rdvae.cohort import member_checkpoint_name
from workers.callbacks import LIVE, LiveSweep, attempts, error_summary
from workers.cohort_search import CohortOptunaSearch
from workers.cohort_trainable import (
    EPOCH_RECORDS,
    cohort_members,
    member_dir,
    member_reports,
    member_statuses,
)
from workers.results import SweepProgress, TrialOutcome
from workers.selection import annotate
from workers.spec import SweepSpec
from workers.stoppers import CancelStopper
from workers.tracking import numeric_metrics
from workers.trainable import CHECKPOINT_FILE, FINAL_FLAG, PER_EXAMPLE_FILE, load_per_example


def member_id(trial_id: str, index: int) -> str:
    """The sweep-wide id of member `index` of Tune trial `trial_id`."""
    return f"{trial_id}-m{index}"


def cohort_count(spec: SweepSpec) -> int:
    """Tune trials a cohort sweep asks for: ceil(n_trials / cohort_size), or n_trials (an upper bound; the searcher
    ends the sweep when every member is handed out) when searched architectures split members into more cohorts."""
    splits = spec.search_space.latent_dim is not None or spec.search_space.decoder is not None
    return spec.n_trials if splits else math.ceil(spec.n_trials / spec.cohort_size)


def cohort_plan(spec: SweepSpec, sweep_id: str) -> tuple[tune.TuneConfig, tune.Stopper, list[tune.Callback]]:
    """What a cohort sweep's Tuner differs in: its search, scheduling, stopper and callback (see `workers.sweep`).

    `max_concurrent_trials` still counts trials: ceil(max_concurrent_trials / cohort_size) cohorts run at once,
    each with `spec.resources`. Stopping is per member inside the cohort, so Tune runs a FIFO scheduler.
    """
    tune_config = tune.TuneConfig(
        search_alg=CohortOptunaSearch(spec),
        scheduler=FIFOScheduler(),
        num_samples=cohort_count(spec),
        max_concurrent_trials=math.ceil(spec.max_concurrent_trials / spec.cohort_size),
        reuse_actors=True,
    )
    return tune_config, CancelStopper(sweep_id), [CohortCallback(sweep_id)]


def _member_model_file(checkpoint_path: str | None, index: int) -> Path | None:
    if checkpoint_path is None:
        return None
    for candidate in (
        Path(checkpoint_path) / member_dir(index) / CHECKPOINT_FILE,
        Path(checkpoint_path) / member_checkpoint_name(index),
    ):
        if candidate.is_file():
            return candidate
    return None


def cohort_progress(live: LiveSweep, trials: list[Trial]) -> SweepProgress:
    """A snapshot of the sweep counted in members, from Tune's cohort trials."""
    counts = {"completed": 0, "stopped": 0, "failed": 0, "running": 0}
    elbos, finished, collapsed = [], [], 0
    for trial in trials:
        if trial.status == Trial.PENDING:
            continue
        members = cohort_members(trial.config)
        statuses = member_statuses(trial.status, trial.last_result, len(members))
        for index, (status, report) in enumerate(zip(statuses, member_reports(trial.last_result) or [], strict=False)):
            metrics = report.get("metrics") or {}
            if status != "running" and "elbo" in metrics:
                elbos.append(float(metrics["elbo"]))
                collapsed += int(live.spec.is_collapsed(metrics))
            if status != "running":
                finished.append(member_id(trial.trial_id, index))
        for status in statuses:
            counts[status] += 1
    return SweepProgress(
        total=live.spec.n_trials,
        completed=counts["completed"],
        stopped=counts["stopped"],
        failed=counts["failed"],
        running=counts["running"],
        collapsed=collapsed,
        best_elbo=max(elbos, default=None),
        finished=finished,
        sweep_id=live.sweep_id,
        mlflow_parent_run_id=live.tracker.parent_run_id,
        mlflow_experiment_id=live.tracker.experiment_id,
    )


class CohortCallback(tune.Callback):
    """One MLflow child run per member (per-epoch metrics, final metrics, model, status); progress in members."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id

    @property
    def live(self) -> LiveSweep:
        return LIVE[self.sweep_id]

    def _emit(self, trials: list[Trial]) -> None:
        if self.live.on_progress is not None:
            self.live.on_progress(cohort_progress(self.live, trials))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        for index, member in enumerate(cohort_members(trial.config)):
            self.live.tracker.child_run(member_id(trial.trial_id, index), member["params"])
        self._emit(trials)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        members = cohort_members(trial.config)
        timestamp = result.get("timestamp", 0)
        records = json.loads(result.get(EPOCH_RECORDS) or "{}")
        for index, record in records.items():
            params = members[int(index)]["params"]
            self.live.tracker.log_result(
                member_id(trial.trial_id, int(index)), params, {**record, "timestamp": timestamp}
            )
        if result.get(FINAL_FLAG) == 1:
            for index, report in enumerate(member_reports(result) or []):
                if report["status"] == "completed":
                    metrics = {**report["metrics"], "timestamp": timestamp}
                    self.live.tracker.log_result(member_id(trial.trial_id, index), members[index]["params"], metrics)
            self._emit(trials)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._end_members(trial)
        self._emit(trials)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._end_members(trial, error_summary(trial.get_error()))
        self._emit(trials)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._emit(trials)

    def _end_members(self, trial: Trial, cohort_error: str | None = None) -> None:
        live = self.live
        members = cohort_members(trial.config)
        status = Trial.ERROR if cohort_error is not None else Trial.TERMINATED
        statuses = member_statuses(status, trial.last_result, len(members))
        reports = member_reports(trial.last_result) or [{} for _ in members]
        checkpoint = trial.checkpoint.path if trial.checkpoint is not None else None
        tries = attempts(live.audit_dir, trial.trial_id)
        for index, (member, member_status, report) in enumerate(zip(members, statuses, reports, strict=True)):
            identifier, params = member_id(trial.trial_id, index), member["params"]
            model_file = _member_model_file(checkpoint, index)
            if live.spec.mlflow.log_models and member_status != "failed" and model_file is not None:
                live.tracker.log_model_later(identifier, params, model_file)
            error = report.get("error") or (cohort_error if member_status == "failed" else None)
            live.tracker.end_trial(identifier, params, member_status, error=error, attempts=tries)


def _tune_trial_id(result: tune.Result) -> str:
    if (result.metrics or {}).get("trial_id"):
        return str(result.metrics["trial_id"])
    # Tune names trial directories "<trainable>_<trial id>_<index>_<params>_<time>" (ids "<hex>" or "<hex>_<5 digits>").
    found = re.match(r"train_cohort_([0-9a-f]+(?:_\d{5})?)_\d+_", Path(result.path).name)
    return found.group(1) if found else Path(result.path).name


def cohort_outcomes(
    spec: SweepSpec, grid: tune.ResultGrid, live: LiveSweep
) -> tuple[list[TrialOutcome], dict[str, dict[str, np.ndarray]]]:
    """One TrialOutcome per member of every cohort, and the completed members' per-example bounds."""
    outcomes, per_example = [], {}
    for result in grid:
        trial_id = _tune_trial_id(result)
        members = cohort_members(result.config or {})
        metrics = dict(result.metrics or {})
        statuses = member_statuses(Trial.ERROR if result.error is not None else Trial.TERMINATED, metrics, len(members))
        reports = member_reports(metrics) or [{} for _ in members]
        checkpoint = result.checkpoint.path if result.checkpoint is not None else None
        cohort_error = error_summary(str(result.error)) if result.error is not None else None
        for index, (member, status, report) in enumerate(zip(members, statuses, reports, strict=True)):
            identifier, params = member_id(trial_id, index), member["params"]
            reported = report.get("metrics") or {}
            values = numeric_metrics(reported) if "elbo" in reported else {}
            if status == "completed" and checkpoint is not None:
                arrays = load_per_example(Path(checkpoint) / member_dir(index) / PER_EXAMPLE_FILE)
                if arrays is not None:
                    per_example[identifier] = arrays
            run_id = live.tracker.child_run(identifier, params)
            model_file = _member_model_file(checkpoint, index)
            model_uri = None
            if status != "failed" and values and model_file is not None and spec.mlflow.log_models:
                model_uri = live.tracker.model_uri(identifier, params, model_file)
            outcome = TrialOutcome(
                trial_id=identifier,
                number=int(member["number"]),
                status=status,
                params={k: v for k, v in params.items() if isinstance(v, int | float | str)},
                metrics=values,
                error=report.get("error") or (cohort_error if status == "failed" else None),
                attempts=max(1, attempts(live.audit_dir, trial_id)),
                train_seconds=values.get("train_seconds"),
                mlflow_run_id=run_id,
                model_uri=model_uri,
                epochs=int(values.get("epoch", 0)),
            )
            outcomes.append(annotate(spec, outcome))
    return sorted(outcomes, key=lambda t: t.number), per_example
