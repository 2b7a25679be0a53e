"""/v1/sweeps: submit, list, inspect, cancel; trials, Pareto front and the rate-distortion plot of a sweep."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from service.api.auth import Caller, Reader, Writer, may_see
from service.api.deps import RunnerDep, SessionDep, SettingsDep
from service.api.errors import ApiError
from service.api.schemas import (
    ErrorBody,
    FieldError,
    ParetoView,
    Progress,
    SweepAccepted,
    SweepDetail,
    SweepPage,
    SweepStatus,
    SweepSummary,
    Timing,
    TrialsView,
)
from service.queue import store
from service.queue.admission import capacity_known, unfit_resources
from service.queue.runner import PROGRESS_FILE, SpecRejectedError, check_spec, enqueue, read_last_progress
from service.settings import Settings
from workers.spec import SweepSpec

# The hot endpoints are `async def` and query the DB inline: each is a handful of indexed statements (< 1 ms on
# SQLite), cheaper than a thread-pool hop and the GIL contention of 40 threads under load. Cancel (may wait on
# the runner's lock) and the plot (matplotlib) stay sync, in the thread pool.
router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])

_E = {"model": ErrorBody}
READ_ERRORS = {401: _E, 404: _E, 422: _E}
SweepId = Annotated[str, PathParam(max_length=64, description="Sweep id returned by POST /v1/sweeps.")]

TINY_EXAMPLE = {
    "name": "digits-tiny",
    "dataset": "digits",
    "n_trials": 4,
    "max_concurrent_trials": 2,
    "epochs": 2,
    "model": {"latent_dim": 4, "hidden_dims": [32]},
    "search_space": {"objective": ["beta"], "beta": {"low": 0.1, "high": 10.0}},
    "iwae_samples": 5,
    "sampler": "random",
}


@router.post(
    "",
    status_code=202,
    response_model=SweepAccepted,
    summary="Submit a sweep (queued, run in the background)",
    responses={401: _E, 413: _E, 422: _E, 429: _E},
)
async def submit(
    response: Response,
    spec: Annotated[
        SweepSpec,
        Body(
            openapi_examples={
                "tiny": {"summary": "A one-minute sweep on digits", "value": TINY_EXAMPLE},
                "nsga2": {
                    "summary": "ELBO vs active units with NSGA-II",
                    "value": SweepSpec.model_config["json_schema_extra"]["examples"][0],
                },
            }
        ),
    ],
    caller: Writer,
    session: SessionDep,
    settings: SettingsDep,
    runner: RunnerDep,
) -> SweepAccepted:
    owner = caller.owner
    _check_quotas(session, settings, spec, owner)
    if capacity_known(settings):
        check_resources(settings, spec)
    else:  # asks Ray once a minute: off the event loop
        await run_in_threadpool(check_resources, settings, spec)
    try:
        # reading and checking a data file takes as long as the file is large: off the event loop
        dataset = await run_in_threadpool(check_spec, spec, settings.data_root)
        sweep = enqueue(session, spec, owner=owner, origin="api", data_root=settings.data_root, dataset=dataset)
    except SpecRejectedError as error:
        field_error = FieldError(field=error.field, reason=error.reason)
        raise ApiError(422, f"invalid request: {error}", errors=[field_error]) from error
    position = store.queue_position(session, sweep)
    session.commit()
    runner.wake()
    url = f"/v1/sweeps/{sweep.id}"
    response.headers["Location"] = url
    return SweepAccepted(id=sweep.id, status=sweep.status, status_url=url, queue_position=position)


def check_spec_quotas(settings: Settings, spec: SweepSpec, owner: str, field_prefix: str = "body") -> None:
    """The per-token caps on a spec's size (`n_trials`, `epochs`): 422 naming the field. Schedules check them too,
    so a schedule cannot start sweeps its owner could not submit."""
    for field, setting in (("n_trials", "max_trials_per_sweep"), ("epochs", "max_epochs")):
        value, cap = getattr(spec, field), settings.quota(owner, setting)
        if value > cap:
            raise ApiError(
                422,
                f"{field} {value} exceeds the quota of {cap}",
                limit=setting,
                errors=[FieldError(field=f"{field_prefix}.{field}", reason=f"at most {cap}")],
            )


def check_resources(settings: Settings, spec: SweepSpec, field_prefix: str = "body") -> None:
    """422 naming `body.resources.<field>` when a trial asks for more than the cluster can ever give."""
    unfit = unfit_resources(settings, spec)
    if unfit is not None:
        field, reason = unfit
        raise ApiError(
            422,
            f"invalid request: {field_prefix}.resources.{field}: {reason}",
            errors=[FieldError(field=f"{field_prefix}.resources.{field}", reason=reason)],
        )


def _check_quotas(session: Session, settings: Settings, spec: SweepSpec, owner: str) -> None:
    check_spec_quotas(settings, spec, owner)
    max_active = settings.quota(owner, "max_active_sweeps_per_token")
    active = store.count_active_for_owner(session, owner)
    if active >= max_active:
        raise ApiError(
            429,
            f"{active} sweeps queued or running for this token; the quota is {max_active}",
            limit="max_active_sweeps_per_token",
        )
    queued = store.count_queued(session)
    if queued >= settings.max_queued_sweeps:
        raise ApiError(429, f"the queue is full ({queued} sweeps)", limit="max_queued_sweeps")


@router.get("", response_model=SweepPage, summary="List sweeps, newest first", responses={401: _E, 422: _E})
async def list_sweeps(
    request: Request,
    reader: Reader,
    session: SessionDep,
    status: Annotated[SweepStatus | None, Query(description="Only sweeps in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    id_prefix: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern="^[0-9a-f]+$", description="Only ids starting so.")
    ] = None,
) -> SweepPage:
    owner = reader.owner if reader is not None and not reader.admin else None
    rows, total = store.list_sweeps(session, status, limit, offset, owner=owner, id_prefix=id_prefix)
    next_offset = offset + len(rows) if offset + len(rows) < total else None
    return SweepPage(
        items=[_summary(request, row) for row in rows], total=total, limit=limit, offset=offset, next_offset=next_offset
    )


@router.get(
    "/{sweep_id}",
    response_model=SweepDetail,
    summary="Status, progress, best-so-far, timing, error",
    responses=READ_ERRORS,
)
async def get_sweep(
    request: Request,
    sweep_id: SweepId,
    reader: Reader,
    session: SessionDep,
    settings: SettingsDep,
) -> SweepDetail:
    sweep, position = store.get_sweep_with_position(session, sweep_id)
    if sweep is None or not may_see(reader, sweep.owner):
        raise ApiError(404, f"no sweep with id {sweep_id!r}")
    return _detail(request, sweep, position, settings)


def _detail(request: Request, sweep: store.Sweep, position: int | None, settings: Settings) -> SweepDetail:
    trained_on, dataset_changed = sweep.trained_on()
    return SweepDetail(
        **_summary(request, sweep).model_dump(),
        queue_position=position,
        cancel_requested=sweep.cancel_requested,
        error=sweep.error,
        mlflow_experiment_id=sweep.mlflow_experiment_id,
        mlflow_parent_run_id=sweep.mlflow_parent_run_id,
        mlflow_parent_run_url=_mlflow_url(settings, sweep),
        driver_launches=sweep.launches,
        dataset=sweep.dataset,
        trained_on=trained_on,
        dataset_changed=dataset_changed,
        spec=sweep.spec,
    )


@router.post(
    "/{sweep_id}/cancel",
    status_code=202,
    response_model=SweepDetail,
    summary="Cancel: a queued sweep at once, a running one by stopping its Ray trials",
    description="Only the sweep's owner (or an admin token) may cancel it; another owner's sweep answers 404.",
    responses={401: _E, 404: _E, 409: _E, 422: _E},
)
def cancel(
    request: Request,
    sweep_id: SweepId,
    caller: Writer,
    session: SessionDep,
    settings: SettingsDep,
    runner: RunnerDep,
) -> SweepDetail:
    sweep = _found(session, sweep_id, caller)
    previous = runner.request_cancel(session, sweep_id)
    session.refresh(sweep)
    if previous is None:
        raise ApiError(409, f"sweep {sweep_id} already {sweep.status}; only queued or running sweeps can be cancelled")
    return _detail(request, sweep, store.queue_position(session, sweep), settings)


@router.delete(
    "/{sweep_id}",
    status_code=204,
    summary="Delete a finished sweep: its record, its sweep folder and its Ray Tune checkpoints",
    description="Only the owner (or an admin token) may delete a sweep; another owner's answers 404. Queued or "
    "running sweeps answer 409: cancel them first. MLflow runs and registered models are kept.",
    responses={401: _E, 404: _E, 409: _E, 422: _E},
)
def delete_sweep(sweep_id: SweepId, caller: Writer, session: SessionDep, settings: SettingsDep) -> Response:
    sweep = _found(session, sweep_id, caller)
    if sweep.status in store.ACTIVE:
        raise ApiError(409, f"sweep {sweep_id} is {sweep.status}; cancel it before deleting it")
    if not store.delete_finished(session, sweep_id):
        raise ApiError(409, f"sweep {sweep_id} changed state meanwhile; try again")
    session.commit()
    for folder in (settings.sweeps_dir / sweep_id, settings.ray_storage_root / sweep_id):
        shutil.rmtree(folder, ignore_errors=True)  # the record is gone: leftovers are only disk
    return Response(status_code=204)


@router.get(
    "/{sweep_id}/trials",
    response_model=TrialsView,
    summary="Trial outcomes: final once finished, as they are so far while it runs",
    responses=READ_ERRORS,
)
def trials(sweep_id: SweepId, reader: Reader, session: SessionDep, settings: SettingsDep) -> TrialsView:
    sweep = _found(session, sweep_id, reader)
    result = sweep.result
    if result is not None:
        return TrialsView(sweep_id=sweep.id, status=sweep.status, trials=result.trials)
    progress = read_last_progress(settings.sweeps_dir / sweep.id / PROGRESS_FILE)  # the driver's latest snapshot
    return TrialsView(sweep_id=sweep.id, status=sweep.status, trials=progress.trials if progress else [])


@router.get(
    "/{sweep_id}/pareto",
    response_model=ParetoView,
    summary="Pareto front, recommendation, reason, and whether the max-ELBO trial collapsed",
    responses={**READ_ERRORS, 409: _E},
)
async def pareto(sweep_id: SweepId, reader: Reader, session: SessionDep) -> ParetoView:
    sweep = _found(session, sweep_id, reader)
    selection = _finished_result(sweep).selection
    return ParetoView(sweep_id=sweep.id, **dict(selection))


@router.get(
    "/{sweep_id}/plot.png",
    summary="The rate-distortion plane of the sweep's trials",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **READ_ERRORS, 409: _E},
)
def plot(sweep_id: SweepId, reader: Reader, session: SessionDep) -> Response:
    sweep = _found(session, sweep_id, reader)
    result = _finished_result(sweep)
    if result.plot_path and Path(result.plot_path).is_file():
        return FileResponse(result.plot_path, media_type="image/png")
    from workers import render_rd_plane  # matplotlib is only loaded when a plot must be drawn

    return Response(render_rd_plane(result.trials, result.selection), media_type="image/png")


def _found(session: Session, sweep_id: str, caller: Caller | None) -> store.Sweep:
    """The sweep, or 404 when there is none or `caller` may not see it (another owner's, with closed reads or on
    a mutating route): the answer does not tell others' sweeps from missing ones."""
    sweep = store.get_sweep(session, sweep_id)
    if sweep is None or not may_see(caller, sweep.owner):
        raise ApiError(404, f"no sweep with id {sweep_id!r}")
    return sweep


def _finished_result(sweep: store.Sweep):  # noqa: ANN202 - workers.SweepResult
    result = sweep.result
    if result is None:
        raise ApiError(409, f"sweep {sweep.id} is {sweep.status}; its Pareto front and plot exist once it succeeds")
    return result


def _mlflow_url(settings: Settings, sweep: store.Sweep) -> str | None:
    uri = settings.resolved_tracking_uri
    if not (sweep.mlflow_parent_run_id and sweep.mlflow_experiment_id and uri.startswith(("http://", "https://"))):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{sweep.mlflow_experiment_id}/runs/{sweep.mlflow_parent_run_id}"


def _summary(request: Request, sweep: store.Sweep) -> SweepSummary:
    return SweepSummary(
        id=sweep.id,
        name=sweep.name,
        status=sweep.status,
        owner=sweep.owner,
        origin=sweep.origin,
        progress=Progress(
            total=sweep.total,
            done=sweep.completed + sweep.stopped + sweep.failed,
            completed=sweep.completed,
            stopped=sweep.stopped,
            running=sweep.running,
            failed=sweep.failed,
            collapsed=sweep.collapsed,
        ),
        best_elbo=sweep.best_elbo,
        timing=_timing(sweep),
        status_url=f"/v1/sweeps/{sweep.id}",
    )


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; they were stored in UTC
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _timing(sweep: store.Sweep) -> Timing:
    created, started, finished = _aware(sweep.created_at), _aware(sweep.started_at), _aware(sweep.finished_at)
    now = datetime.now(UTC)
    queued = ((started or finished or now) - created).total_seconds()
    run = ((finished or now) - started).total_seconds() if started else None
    return Timing(created_at=created, started_at=started, finished_at=finished, queued_seconds=queued, run_seconds=run)
