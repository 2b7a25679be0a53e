"""What a sweep returns: trial outcomes, the Pareto front, the recommendation and live progress."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

TrialStatus = Literal["running", "completed", "stopped", "failed"]


class TrialOutcome(BaseModel):
    """One trial: its sampled parameters, final held-out metrics and verdicts."""

    trial_id: str
    number: int = Field(description="Optuna trial number (order of suggestion).")
    status: TrialStatus
    params: dict[str, float | int | str] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict, description="Final held-out metrics (validation).")
    collapsed: bool | None = None
    feasible: bool | None = Field(None, description="All constraints hold and the model is not collapsed.")
    error: str | None = None
    attempts: int = 1
    train_seconds: float | None = None
    mlflow_run_id: str | None = None
    model_uri: str | None = Field(None, description="MLflow model URI of the trial's final model, when logged.")
    epochs: int = Field(0, description="Epochs the trial trained (fewer than the spec's when stopped early).")


class Selection(BaseModel):
    """The answer to 'which model should I keep?'."""

    front: list[TrialOutcome] = Field(default_factory=list, description="Pareto front of the feasible trials.")
    hypervolume: float | None = None
    reference_point: list[float] | None = None
    recommended: TrialOutcome | None = None
    reason: str = ""
    max_elbo: TrialOutcome | None = Field(None, description="The unconstrained best-ELBO trial.")
    max_elbo_collapsed: bool | None = None
    elbo_gap: float | None = Field(None, description="max-ELBO trial's ELBO minus the recommended one's (nats).")


class SweepProgress(BaseModel):
    """A live snapshot, handed to `run_sweep`'s `on_progress` callback."""

    total: int
    completed: int = 0
    running: int = 0
    failed: int = 0
    collapsed: int = 0
    stopped: int = 0
    best_elbo: float | None = None
    finished: list[str] = Field(default_factory=list, description="Ids of trials that ended (any status).")
    sweep_id: str | None = None
    mlflow_parent_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    trials: list[TrialOutcome] = Field(default_factory=list, description="Started trials as they are so far.")


class SweepResult(BaseModel):
    """Everything a finished sweep produced."""

    name: str
    sweep_id: str | None = None
    trials: list[TrialOutcome]
    selection: Selection
    mlflow_parent_run_id: str | None = None
    mlflow_experiment_id: str | None = None
    plot_path: str | None = None
    cancelled: bool = False
    wall_seconds: float = 0.0
    storage_path: str | None = Field(None, description="The sweep's directory (Tune experiment state, resumable).")
