"""What a sweep returns: trial outcomes, the Pareto front, the recommendation and live progress."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from rdvae import DatasetInfo

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


class PairedGap(BaseModel):
    """A difference of mean held-out bounds between two trials on the same examples, with its paired SE."""

    gap: float = Field(description="First trial's mean bound minus the second's (nats).")
    standard_error: float | None = Field(None, description="Paired SE over examples; None without per-example data.")
    examples: int = 0

    def significant(self) -> bool | None:
        """|gap| > 2 SE (None when no SE is known)."""
        return None if self.standard_error is None else abs(self.gap) > 2.0 * self.standard_error


class Selection(BaseModel):
    """The answer to 'which model should I keep?', and how sure it is.

    Trials are compared on equal terms: only those trained to the full budget (`completed`) enter the front, the
    max-ELBO verdict and the recommendation; trials stopped early are `censored_trials`. `max_elbo_collapsed` is
    None when censoring leaves the verdict undetermined.
    """

    front: list[TrialOutcome] = Field(default_factory=list, description="Pareto front of the feasible trials.")
    hypervolume: float | None = None
    reference_point: list[float] | None = None
    recommended: TrialOutcome | None = None
    reason: str = Field("", description="The answer in plain words: what collapsed, what it costs, why this model.")
    max_elbo: TrialOutcome | None = Field(None, description="The unconstrained best-ELBO trial (full budget).")
    max_elbo_collapsed: bool | None = Field(None, description="None: undetermined (censored trials, no trial).")
    elbo_gap: float | None = Field(None, description="max-ELBO trial's ELBO minus the recommended one's (nats).")
    elbo_gap_se: float | None = Field(None, description="Paired standard error of `elbo_gap` over held-out examples.")
    max_iwae: TrialOutcome | None = Field(None, description="The best trial by the tighter IWAE bound.")
    iwae_gap: PairedGap | None = Field(None, description="IWAE bound of the max-ELBO trial minus the recommended's.")
    bounds_disagree: bool | None = Field(None, description="ELBO and IWAE pick different best trials.")
    censored_trials: list[int] = Field(default_factory=list, description="Numbers of trials stopped early.")
    rd_frontier: list[int] = Field(
        default_factory=list, description="Numbers of RD-optimal trials: no other has both lower R and lower D."
    )
    collapse_rate_threshold: float | None = Field(None, description="Nats; the one collapse rule used.")
    notes: list[str] = Field(default_factory=list, description="Caveats: censoring, saturated estimators.")


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
    dataset: DatasetInfo | None = Field(
        None, description="The data set as the driver read it when it (last) started: digest, shape, likelihood."
    )
