"""Persistence of sweeps: the `sweeps` table and the queries the routes and the runner make on it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from rdvae import DatasetInfo
from service.queue.db import Base
from workers.results import SweepProgress, SweepResult
from workers.spec import SweepSpec

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Sweep(Base):
    """One accepted sweep. `seq` orders the FIFO queue; `driver_pid` is its supervisor (see runner)."""

    __tablename__ = "sweeps"
    __table_args__ = (
        Index("ix_sweeps_status_seq", "status", "seq"),
        Index("ix_sweeps_owner_status", "owner", "status"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True, index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    origin: Mapped[str] = mapped_column(String(100), default="api")
    spec_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    stopped: Mapped[int] = mapped_column(Integer, default=0)
    running: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    collapsed: Mapped[int] = mapped_column(Integer, default=0)
    best_elbo: Mapped[float | None] = mapped_column(Float)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(String(64))
    driver_pid: Mapped[int | None] = mapped_column(Integer)
    launches: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    result_json: Mapped[str | None] = mapped_column(Text)
    dataset_json: Mapped[str | None] = mapped_column(Text)

    @property
    def spec(self) -> SweepSpec:
        return SweepSpec.model_validate_json(self.spec_json)

    @property
    def result(self) -> SweepResult | None:
        return SweepResult.model_validate_json(self.result_json) if self.result_json else None

    @property
    def dataset(self) -> DatasetInfo | None:
        return DatasetInfo.model_validate_json(self.dataset_json) if self.dataset_json else None

    def trained_on(self) -> tuple[DatasetInfo | None, bool | None]:
        """The data set as the driver read it (from the result), and whether its digest differs from the one
        checked at submit (None until both are known)."""
        result = self.result
        trained = result.dataset if result is not None else None
        return trained, dataset_changed(self.dataset, trained)


def dataset_changed(submitted: DatasetInfo | None, trained: DatasetInfo | None) -> bool | None:
    """The driver trained on other bytes than were checked at submit (None until both are known)."""
    return None if trained is None or submitted is None else trained.digest != submitted.digest


def create_sweep(
    session: Session, spec: SweepSpec, owner: str, origin: str = "api", dataset: DatasetInfo | None = None
) -> Sweep:
    """Insert a queued sweep (with the data set checked at submit); the caller's transaction commits it."""
    sweep = Sweep(
        id=uuid.uuid4().hex,
        name=spec.name,
        status="queued",
        owner=owner,
        origin=origin,
        spec_json=spec.model_dump_json(),
        created_at=utcnow(),
        total=spec.n_trials,
        completed=0,
        stopped=0,
        running=0,
        failed=0,
        collapsed=0,
        launches=0,
        cancel_requested=False,
        dataset_json=dataset.model_dump_json() if dataset is not None else None,
    )
    session.add(sweep)
    session.flush()
    return sweep


# The statements of the hot paths (GET a sweep, POST's quota checks) are built once: building a Select and its
# cache key costs more than running it on SQLite.
_AHEAD = aliased(Sweep)
_BY_ID = select(Sweep).where(Sweep.id == bindparam("sweep_id"))
_WITH_POSITION = select(
    Sweep,
    select(func.count())
    .select_from(_AHEAD)
    .where(_AHEAD.status == "queued", _AHEAD.seq < Sweep.seq)
    .correlate(Sweep)
    .scalar_subquery(),
).where(Sweep.id == bindparam("sweep_id"))
_QUEUED_AHEAD = select(func.count()).select_from(Sweep).where(Sweep.status == "queued", Sweep.seq < bindparam("seq"))
_ACTIVE_FOR_OWNER = (
    select(func.count()).select_from(Sweep).where(Sweep.owner == bindparam("owner"), Sweep.status.in_(ACTIVE))
)
_BY_STATUS = select(Sweep.status, func.count()).group_by(Sweep.status)
_QUEUED = select(func.count()).select_from(Sweep).where(Sweep.status == "queued")


def get_sweep_with_position(session: Session, sweep_id: str) -> tuple[Sweep | None, int | None]:
    """The sweep and its 1-based FIFO position (None unless queued), in one round trip (the hot GET)."""
    row = session.execute(_WITH_POSITION, {"sweep_id": sweep_id}).first()
    if row is None:
        return None, None
    sweep, before = row
    return sweep, before + 1 if sweep.status == "queued" else None


def get_sweep(session: Session, sweep_id: str) -> Sweep | None:
    return session.scalar(_BY_ID, {"sweep_id": sweep_id})


def list_sweeps(
    session: Session, status: str | None, limit: int, offset: int, *, owner: str | None = None,
    id_prefix: str | None = None,
) -> tuple[Sequence[Sweep], int]:  # fmt: skip
    """A page of sweeps, newest first, optionally only one status, one owner's, or ids starting with a prefix."""
    conditions = []
    if status is not None:
        conditions.append(Sweep.status == status)
    if owner is not None:
        conditions.append(Sweep.owner == owner)
    if id_prefix is not None:
        conditions.append(Sweep.id.startswith(id_prefix, autoescape=True))
    query = select(Sweep).where(*conditions)
    count = select(func.count()).select_from(Sweep).where(*conditions)
    rows = session.scalars(query.order_by(Sweep.seq.desc()).limit(limit).offset(offset)).all()
    return rows, int(session.scalar(count) or 0)


def count_active_for_owner(session: Session, owner: str) -> int:
    return int(session.scalar(_ACTIVE_FOR_OWNER, {"owner": owner}) or 0)


def count_queued(session: Session) -> int:
    return int(session.scalar(_QUEUED) or 0)


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(_BY_STATUS).all()
    return {status: int(n) for status, n in rows}


def trials_run(session: Session) -> int:
    total = func.coalesce(func.sum(Sweep.completed + Sweep.stopped + Sweep.failed), 0)
    return int(session.scalar(select(total)) or 0)


def queue_position(session: Session, sweep: Sweep) -> int | None:
    """1-based place of a queued sweep in the FIFO queue."""
    if sweep.status != "queued":
        return None
    return int(session.scalar(_QUEUED_AHEAD, {"seq": sweep.seq}) or 0) + 1


def queued_in_order(session: Session) -> Sequence[Sweep]:
    return session.scalars(select(Sweep).where(Sweep.status == "queued").order_by(Sweep.seq)).all()


def last_started_by_owner(session: Session, owners: Sequence[str]) -> dict[str, datetime]:
    """When each of `owners` last had a sweep started (owners never served are absent)."""
    if not owners:
        return {}
    rows = session.execute(
        select(Sweep.owner, func.max(Sweep.started_at)).where(Sweep.owner.in_(owners)).group_by(Sweep.owner)
    ).all()
    return {owner: moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment for owner, moment in rows if moment}


def running_sweeps(session: Session) -> Sequence[Sweep]:
    return session.scalars(select(Sweep).where(Sweep.status == "running").order_by(Sweep.seq)).all()


def apply_progress(sweep: Sweep, progress: SweepProgress) -> None:
    sweep.total = progress.total
    sweep.completed = progress.completed
    sweep.stopped = progress.stopped
    sweep.running = progress.running
    sweep.failed = progress.failed
    sweep.collapsed = progress.collapsed
    sweep.best_elbo = progress.best_elbo
    sweep.mlflow_parent_run_id = progress.mlflow_parent_run_id or sweep.mlflow_parent_run_id
    sweep.mlflow_experiment_id = progress.mlflow_experiment_id or sweep.mlflow_experiment_id


def apply_result(sweep: Sweep, result: SweepResult) -> None:
    """Store the final result; progress counters are recomputed from its trials so they agree with it."""
    sweep.result_json = result.model_dump_json()
    sweep.completed = sum(t.status == "completed" for t in result.trials)
    sweep.stopped = sum(t.status == "stopped" for t in result.trials)
    sweep.failed = sum(t.status == "failed" for t in result.trials)
    sweep.running = 0
    sweep.collapsed = sum(bool(t.collapsed) for t in result.trials)
    elbos = [t.metrics["elbo"] for t in result.trials if "elbo" in t.metrics]
    sweep.best_elbo = max(elbos) if elbos else sweep.best_elbo
    sweep.mlflow_parent_run_id = result.mlflow_parent_run_id or sweep.mlflow_parent_run_id
    sweep.mlflow_experiment_id = result.mlflow_experiment_id or sweep.mlflow_experiment_id


def claim_queued(session: Session, sweep: Sweep) -> bool:
    """Atomically move a queued sweep to running; False when it left the queue meanwhile (e.g. cancelled)."""
    claimed = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep.id, Sweep.status == "queued")
        .values(status="running", started_at=func.coalesce(Sweep.started_at, utcnow()))
        .execution_options(synchronize_session=False)
    )
    session.refresh(sweep)
    return claimed.rowcount == 1


def delete_finished(session: Session, sweep_id: str) -> bool:
    """Delete a sweep's row if it has finished (a conditional delete: never one the runner is starting)."""
    deleted = session.execute(
        delete(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status.in_(FINISHED))
        .execution_options(synchronize_session=False)
    )
    return deleted.rowcount == 1


def mark_cancel(session: Session, sweep_id: str) -> str | None:
    """Record a cancel request with conditional updates (no lost update against the runner): a queued sweep is
    cancelled at once, a running one flagged. Returns the status it had, or None when it had already finished."""
    now = utcnow()
    queued = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    if queued.rowcount == 1:
        return "queued"
    running = session.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status == "running")
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    return "running" if running.rowcount == 1 else None
