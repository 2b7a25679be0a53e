"""/v1/schedules: cron-scheduled sweeps — create, list, inspect, update, delete, pause and resume.

Only a schedule's owner (or an admin token) may change, pause, resume or delete it: another owner's schedule
answers 404. A token owns at most `max_schedules_per_token` schedules; each firing counts against the owner's
active-sweep quota like a direct submission (service/scheduling/scheduler.py).

The router's lifespan runs the scheduler loop (service/scheduling/scheduler.py) for as long as the app serves.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.api.auth import Caller, Reader, Writer, may_see
from service.api.deps import SessionDep, SettingsDep
from service.api.errors import ApiError
from service.api.routes.sweeps import check_resources, check_spec_quotas
from service.api.schemas import ErrorBody, FieldError
from service.queue.runner import SpecRejectedError, check_spec
from service.scheduling.scheduler import (
    Schedule,
    Scheduler,
    as_utc,
    check_cron,
    check_timezone,
    create_schedule,
    reschedule,
    utcnow,
)
from service.settings import Settings
from workers.spec import PlainText, SweepSpec


@asynccontextmanager
async def _run_scheduler(app: FastAPI) -> AsyncIterator[None]:
    scheduler = Scheduler(app.state.settings, app.state.session_factory, on_fire=app.state.runner.wake)
    app.state.scheduler = scheduler
    scheduler.start()
    try:
        yield
    finally:
        scheduler.stop()


router = APIRouter(prefix="/v1/schedules", tags=["schedules"], lifespan=_run_scheduler)
_E = {"model": ErrorBody}
ScheduleId = Annotated[str, PathParam(max_length=64, description="Schedule id returned by POST /v1/schedules.")]
Upcoming = Annotated[int, Query(ge=1, le=50, description="How many next fire times to show.")]
EXAMPLE = {"name": "nightly-digits", "cron": "0 2 * * *", "timezone": "Europe/Paris", "warm_start": True,
           "spec": {"dataset": "digits", "n_trials": 8, "epochs": 10}}  # fmt: skip


class _Timing(BaseModel):
    @field_validator("cron", check_fields=False)
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone", check_fields=False)
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


class ScheduleCreate(_Timing):
    """A cron expression read in `timezone`, and the sweep to submit at each fire time."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [EXAMPLE]})

    name: PlainText | None = Field(None, max_length=200)
    cron: str = Field(min_length=6, max_length=200, description="Five-field cron (`0 2 * * *`) or an alias (`@daily`).")
    timezone: str = Field("UTC", min_length=1, max_length=64, description="IANA timezone the cron is read in.")
    spec: SweepSpec
    warm_start: bool = Field(False, description="Seed each sweep with the previous sweep's Pareto-front params.")
    paused: bool = False


class ScheduleUpdate(_Timing):
    """Fields to change; the next fire time is recomputed from now."""

    model_config = ConfigDict(extra="forbid")

    name: PlainText | None = Field(None, max_length=200)
    cron: str | None = Field(None, min_length=6, max_length=200)
    timezone: str | None = Field(None, min_length=1, max_length=64)
    spec: SweepSpec | None = None
    warm_start: bool | None = None


class ScheduleView(BaseModel):
    id: str
    name: str | None
    cron: str
    timezone: str
    paused: bool
    warm_start: bool
    owner: str
    created_at: datetime
    next_fire_times: list[datetime] = Field(description="Upcoming fire times in the schedule's timezone.")
    last_fired_at: datetime | None
    last_sweep_id: str | None = Field(description="The sweep the last firing started (GET /v1/sweeps/{id}).")
    fire_count: int
    missed_count: int = Field(description="Fire times coalesced into a later run (misfire policy: coalesce).")
    last_error: str | None
    last_warm_start_params: list[dict[str, Any]] | None = None
    spec: SweepSpec


class SchedulePage(BaseModel):
    items: list[ScheduleView]
    total: int


def _now(request: Request) -> datetime:
    scheduler = getattr(request.app.state, "scheduler", None)
    return scheduler.now() if scheduler is not None else utcnow()


def _wake(request: Request) -> None:
    scheduler = getattr(request.app.state, "scheduler", None)
    if scheduler is not None:
        scheduler.wake()


def _view(schedule: Schedule, now: datetime, upcoming: int) -> ScheduleView:
    return ScheduleView(
        id=schedule.id, name=schedule.name, cron=schedule.cron, timezone=schedule.timezone, paused=schedule.paused,
        warm_start=schedule.warm_start, owner=schedule.owner, created_at=as_utc(schedule.created_at),
        next_fire_times=schedule.upcoming(now, upcoming),
        last_fired_at=as_utc(schedule.last_fired_at) if schedule.last_fired_at else None,
        last_sweep_id=schedule.last_sweep_id, fire_count=schedule.fire_count, missed_count=schedule.missed_count,
        last_error=schedule.last_error, spec=schedule.spec,
        last_warm_start_params=json.loads(schedule.last_warm_start_json) if schedule.last_warm_start_json else None,
    )  # fmt: skip


def _runnable(spec: SweepSpec, settings: Settings, owner: str) -> None:
    """The same data-root rule and size quotas as POST /v1/sweeps, checked now rather than at each fire time."""
    check_spec_quotas(settings, spec, owner, field_prefix="body.spec")
    check_resources(settings, spec, field_prefix="body.spec")
    try:
        check_spec(spec, settings.data_root)
    except SpecRejectedError as error:
        field = error.field.replace("body.", "body.spec.", 1)
        raise ApiError(422, f"invalid request: {field}: {error.reason}",
                       errors=[FieldError(field=field, reason=error.reason)]) from error  # fmt: skip


def _found(session: Session, schedule_id: str, caller: Caller | None) -> Schedule:
    """The schedule, or 404 when there is none or `caller` may not see it (another owner's)."""
    schedule = session.get(Schedule, schedule_id)
    if schedule is None or not may_see(caller, schedule.owner):
        raise ApiError(404, f"no schedule with id {schedule_id!r}")
    return schedule


@router.post("", status_code=201, response_model=ScheduleView, summary="Create a schedule",
             responses={401: _E, 422: _E, 429: _E})  # fmt: skip
def create(request: Request, body: ScheduleCreate, caller: Writer, session: SessionDep, settings: SettingsDep,
           upcoming: Upcoming = 5) -> ScheduleView:  # fmt: skip
    owner = caller.owner
    _runnable(body.spec, settings, owner)
    owned = int(session.scalar(select(func.count()).select_from(Schedule).where(Schedule.owner == owner)) or 0)
    limit = settings.quota(owner, "max_schedules_per_token")
    if owned >= limit:
        raise ApiError(429, f"this token owns {owned} schedules; the quota is {limit}", limit="max_schedules_per_token")
    now = _now(request)
    schedule = create_schedule(session, name=body.name, cron=body.cron, timezone=body.timezone, spec=body.spec,
                               warm_start=body.warm_start, paused=body.paused, owner=owner, now=now)  # fmt: skip
    session.commit()
    _wake(request)
    return _view(schedule, now, upcoming)


@router.get("", response_model=SchedulePage, summary="List schedules with their next fire times",
            responses={401: _E})  # fmt: skip
def list_schedules(request: Request, reader: Reader, session: SessionDep, upcoming: Upcoming = 3) -> SchedulePage:
    mine = [Schedule.owner == reader.owner] if reader is not None and not reader.admin else []
    rows = session.scalars(select(Schedule).where(*mine).order_by(Schedule.created_at)).all()
    total = int(session.scalar(select(func.count()).select_from(Schedule).where(*mine)) or 0)
    now = _now(request)
    return SchedulePage(items=[_view(row, now, upcoming) for row in rows], total=total)


@router.get("/{schedule_id}", response_model=ScheduleView, summary="A schedule, its next fire times, last sweep",
            responses={401: _E, 404: _E})  # fmt: skip
def get_schedule(request: Request, schedule_id: ScheduleId, reader: Reader, session: SessionDep,
                 upcoming: Upcoming = 5) -> ScheduleView:  # fmt: skip
    return _view(_found(session, schedule_id, reader), _now(request), upcoming)


@router.patch("/{schedule_id}", response_model=ScheduleView, summary="Change cron, timezone, spec or warm start",
              responses={401: _E, 404: _E, 422: _E})  # fmt: skip
def update_schedule(request: Request, schedule_id: ScheduleId, body: ScheduleUpdate, caller: Writer,
                    session: SessionDep, settings: SettingsDep) -> ScheduleView:  # fmt: skip
    schedule = _found(session, schedule_id, caller)
    if body.spec is not None:
        _runnable(body.spec, settings, schedule.owner)
    changes = body.model_dump(exclude_unset=True)
    for key in ("name", "cron", "timezone", "warm_start"):
        if key in changes and (changes[key] is not None or key == "name"):
            setattr(schedule, key, changes[key])
    if body.spec is not None:
        schedule.spec_json = body.spec.model_dump_json()
    now = _now(request)
    reschedule(schedule, now)
    session.commit()
    _wake(request)
    return _view(schedule, now, 5)


@router.delete("/{schedule_id}", status_code=204, summary="Delete a schedule (its sweeps are kept)",
               responses={401: _E, 404: _E})  # fmt: skip
def delete_schedule(schedule_id: ScheduleId, caller: Writer, session: SessionDep) -> Response:
    session.delete(_found(session, schedule_id, caller))
    session.commit()
    return Response(status_code=204)


def _set_paused(request: Request, schedule_id: str, paused: bool, session: Session, caller: Caller) -> ScheduleView:
    schedule = _found(session, schedule_id, caller)
    if schedule.paused != paused:
        schedule.paused = paused
        reschedule(schedule, _now(request))  # resuming starts from now: paused time is not caught up
    session.commit()
    _wake(request)
    return _view(schedule, _now(request), 5)


@router.post("/{schedule_id}/pause", response_model=ScheduleView, summary="Pause: no fire times until resumed",
             responses={401: _E, 404: _E})  # fmt: skip
def pause(request: Request, schedule_id: ScheduleId, caller: Writer, session: SessionDep) -> ScheduleView:
    return _set_paused(request, schedule_id, True, session, caller)


@router.post("/{schedule_id}/resume", response_model=ScheduleView, summary="Resume from the next fire time after now",
             responses={401: _E, 404: _E})  # fmt: skip
def resume(request: Request, schedule_id: ScheduleId, caller: Writer, session: SessionDep) -> ScheduleView:
    return _set_paused(request, schedule_id, False, session, caller)
