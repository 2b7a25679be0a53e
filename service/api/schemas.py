"""Response schemas of the HTTP API (the CLI's contract). The request body is `workers.SweepSpec` itself."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from rdvae import DatasetInfo
from workers.results import Selection, TrialOutcome
from workers.spec import SweepSpec

SweepStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Progress(BaseModel):
    """Trials done out of total, and what is in flight."""

    total: int
    done: int = Field(description="Trials that ended: completed + stopped + failed.")
    completed: int = Field(description="Trials that trained all their epochs.")
    stopped: int = Field(0, description="Trials ended early (ASHA, collapse stopper, cancel).")
    running: int
    failed: int
    collapsed: int = Field(description="Finished trials whose posterior collapsed.")


class Timing(BaseModel):
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queued_seconds: float | None = None
    run_seconds: float | None = Field(None, description="Running so far, or total once finished.")


class SweepAccepted(BaseModel):
    """202 answer to POST /v1/sweeps."""

    id: str
    status: SweepStatus
    status_url: str
    queue_position: int | None = Field(
        None, description="Sweeps queued before this one; they start round-robin by owner, so others may go first."
    )
    mlflow_parent_run_url: str | None = Field(None, description="Known once the driver has created the run.")


class SweepSummary(BaseModel):
    id: str
    name: str | None
    status: SweepStatus
    owner: str
    origin: str
    progress: Progress
    best_elbo: float | None = Field(None, description="Best held-out ELBO so far (nats).")
    timing: Timing
    status_url: str


class SweepDetail(SweepSummary):
    """GET /v1/sweeps/{id}."""

    queue_position: int | None = Field(
        None, description="Sweeps queued before this one; they start round-robin by owner, so others may go first."
    )
    cancel_requested: bool = False
    error: str | None = None
    mlflow_experiment_id: str | None = None
    mlflow_parent_run_id: str | None = None
    mlflow_parent_run_url: str | None = None
    driver_launches: int = Field(0, description="1 normally; more when the driver was resumed after a crash.")
    dataset: DatasetInfo | None = Field(
        None, description="The data set as checked at submit: digest, shape, dtype, likelihood (its lineage)."
    )
    trained_on: DatasetInfo | None = Field(
        None, description="The data set as the driver read it when it (last) started; known once the sweep has ended."
    )
    dataset_changed: bool | None = Field(
        None,
        description="True when the driver trained on other bytes than those checked at submit (the file changed in "
        "between): the lineage is `trained_on`'s. None until both are known.",
    )
    spec: SweepSpec


class SweepPage(BaseModel):
    items: list[SweepSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None = None


class TrialsView(BaseModel):
    sweep_id: str
    status: SweepStatus
    trials: list[TrialOutcome] = Field(
        description="Final outcomes once finished; while running, the started trials as the driver last reported."
    )


class ParetoView(Selection):
    """The answer to 'which model should I keep?': the sweep's `Selection`, with its id."""

    sweep_id: str


class FieldError(BaseModel):
    field: str = Field(description="Dotted path into the request, e.g. `body.search_space.beta.low`.")
    reason: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer."""

    detail: str
    errors: list[FieldError] | None = None
    limit: str | None = Field(None, description="The quota or limit that was hit, by its setting name.")


class Check(BaseModel):
    ok: bool
    detail: str = ""


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, Check]
