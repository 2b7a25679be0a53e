"""Scheduled sweeps: the `schedules` table, cron arithmetic (croniter, zoneinfo) and the loop that fires them.

Misfire policy — coalesce: a schedule whose `next_fire_at` has passed fires ONE sweep however many fire times
were missed (service down, loop late), and its next fire time is then computed from *now*. Firing advances
`next_fire_at` with a compare-and-set in the same transaction that inserts the sweep, so a crash before the commit
fires again after restart (never skipped) and a crash after it does not (never doubled); two API processes on one
DB cannot both fire the same time. Paused schedules have no next fire time; resuming starts from now (no catch-up).
Warm start: the sweep gets the Pareto-front parameters of the schedule's previous sweep (each distinct point once) as
points to try first. Each firing gets its own sampler seed (the spec's seed + the number of earlier firings), so a
sweep does not re-sample what the previous one — whose front it starts from — already tried.
Quotas: a firing counts against its owner's `max_active_sweeps_per_token` (and the global queue limit) exactly like
a direct submission; over quota, the fire time is skipped and `last_error` says why.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from sqlalchemy import Boolean, DateTime, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from service._polling import PollingThread
from service.queue import store
from service.queue.db import Base, session_scope
from service.queue.runner import SpecRejectedError, submit_sweep
from service.settings import Settings
from workers.spec import MAX_SEED, SweepSpec

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
WARM_START_FIELD = "warm_start_params"
MAX_WARM_START_POINTS = 100


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_cron(expression: str) -> str:
    """A five-field cron expression (minute hour day month weekday) or an alias such as `@daily`."""
    expression = " ".join(expression.split())
    if not expression.startswith("@") and len(expression.split()) != 5:
        raise ValueError(f"{expression!r}: use five fields (minute hour day-of-month month day-of-week)")
    if not croniter.is_valid(expression):
        raise ValueError(f"{expression!r} is not a valid cron expression")
    try:  # valid fields can still never match, e.g. February 30th
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterBadDateError, ValueError) as error:
        raise ValueError(f"{expression!r} never fires") from error
    return expression


def check_timezone(name: str) -> str:
    """An IANA timezone name, e.g. `Europe/Paris` or `UTC`."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown timezone {name!r}; use an IANA name such as 'Europe/Paris' or 'UTC'") from error
    return name


def fire_times(cron: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times strictly after `after`, in the schedule's timezone (DST as croniter handles it)."""
    iterator = croniter(cron, as_utc(after).astimezone(ZoneInfo(timezone)))
    return [iterator.get_next(datetime) for _ in range(count)]


def as_utc(moment: datetime) -> datetime:
    """`moment` with its timezone: SQLite hands back naive datetimes, and everything is stored in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


class Schedule(Base):
    """A cron expression + timezone + SweepSpec template; `next_fire_at` (UTC) is NULL while paused."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    spec_json: Mapped[str] = mapped_column(Text)
    warm_start: Mapped[bool] = mapped_column(Boolean, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_fire_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    last_fired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sweep_id: Mapped[str | None] = mapped_column(String(32))
    fire_count: Mapped[int] = mapped_column(Integer, default=0)
    missed_count: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_warm_start_json: Mapped[str | None] = mapped_column(Text)

    @property
    def spec(self) -> SweepSpec:
        return SweepSpec.model_validate_json(self.spec_json)

    def upcoming(self, now: datetime, count: int) -> list[datetime]:
        return [] if self.paused else fire_times(self.cron, self.timezone, now, count)


def create_schedule(session: Session, *, name: str | None, cron: str, timezone: str, spec: SweepSpec,
                    warm_start: bool, paused: bool, owner: str, now: datetime) -> Schedule:  # fmt: skip
    schedule = Schedule(
        id=uuid.uuid4().hex, name=name, cron=cron, timezone=timezone, spec_json=spec.model_dump_json(),
        warm_start=warm_start, paused=paused, owner=owner, created_at=now, fire_count=0, missed_count=0,
    )  # fmt: skip
    schedule.next_fire_at = None if paused else fire_times(cron, timezone, now, 1)[0].astimezone(UTC)
    session.add(schedule)
    session.flush()
    return schedule


def reschedule(schedule: Schedule, now: datetime) -> None:
    """Recompute the next fire time from `now` (after a pause, resume or cron/timezone change)."""
    schedule.next_fire_at = None if schedule.paused else schedule.upcoming(now, 1)[0].astimezone(UTC)


def warm_start_params(session: Session, schedule: Schedule) -> list[dict]:
    """Distinct parameters of the Pareto front of the schedule's previous sweep (empty when it has none yet)."""
    previous = store.get_sweep(session, schedule.last_sweep_id) if schedule.last_sweep_id else None
    result = previous.result if previous is not None else None
    if result is None:
        return []
    points: dict[str, dict] = {}
    for trial in result.selection.front:
        if trial.params:
            points.setdefault(json.dumps(trial.params, sort_keys=True), dict(trial.params))
    return list(points.values())


def fire_seed(seed: int, earlier_fires: int) -> int:
    """The sampler seed of a schedule's firing: the spec's seed for the first, then a new one each time."""
    return (seed + earlier_fires) % (MAX_SEED + 1)


def _sweep_spec(session: Session, schedule: Schedule) -> SweepSpec:
    spec = schedule.spec
    seed = fire_seed(spec.seed, schedule.fire_count - 1)
    if seed != spec.seed:
        spec = SweepSpec.model_validate({**spec.model_dump(), "seed": seed})
    if not schedule.warm_start:
        return spec
    points = warm_start_params(session, schedule)
    schedule.last_warm_start_json = json.dumps(points)
    if points and WARM_START_FIELD in SweepSpec.model_fields:
        # validated, not copied: the stored spec must load again (SweepSpec caps the number of points)
        spec = SweepSpec.model_validate({**spec.model_dump(), WARM_START_FIELD: points[:MAX_WARM_START_POINTS]})
    elif points:
        logger.warning("schedule %s: workers.SweepSpec has no %s; sweep starts cold", schedule.id, WARM_START_FIELD)
    return spec


def fire_due(session_factory: sessionmaker[Session], settings: Settings, now: datetime) -> list[str]:
    """Fire every active schedule whose next fire time is at or before `now`; returns the sweep ids started."""
    with session_scope(session_factory) as session:
        due = session.scalars(select(Schedule.id).where(Schedule.paused.is_(False), Schedule.next_fire_at <= now)).all()
    started = []
    for schedule_id in due:
        sweep_id = _fire_one(session_factory, settings, schedule_id, now)
        if sweep_id is not None:
            started.append(sweep_id)
    return started


def _fire_one(
    session_factory: sessionmaker[Session], settings: Settings, schedule_id: str, now: datetime
) -> str | None:
    with session_scope(session_factory) as session:
        schedule = session.get(Schedule, schedule_id)
        if schedule is None or schedule.paused or schedule.next_fire_at is None or as_utc(schedule.next_fire_at) > now:
            return None
        due_at = schedule.next_fire_at
        missed = len(_times_between(schedule, as_utc(due_at), now))
        following = fire_times(schedule.cron, schedule.timezone, now, 1)[0].astimezone(UTC)
        # compare-and-set: only the process that moves next_fire_at away from `due_at` fires this time
        claimed = session.execute(
            update(Schedule)
            .where(Schedule.id == schedule_id, Schedule.next_fire_at == due_at)
            .values(next_fire_at=following)
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            return None
        session.refresh(schedule)
        refusal = _over_quota(session, settings, schedule.owner)
        if refusal is not None:
            schedule.last_error = f"skipped the fire time {due_at.isoformat()}: {refusal}"
            logger.warning("schedule %s: %s", schedule.id, schedule.last_error)
            return None
        schedule.last_fired_at = now
        schedule.fire_count += 1
        schedule.missed_count += missed
        try:
            sweep_id = submit_sweep(session, _sweep_spec(session, schedule), owner=schedule.owner,
                                    origin=f"schedule:{schedule.id}", data_root=settings.data_root)  # fmt: skip
        except (SpecRejectedError, ValueError) as error:
            schedule.last_error = f"{type(error).__name__}: {error}"
            logger.error("schedule %s could not start a sweep: %s", schedule.id, error)
            return None
        schedule.last_sweep_id = sweep_id
        schedule.last_error = None
        logger.info("schedule %s fired sweep %s (coalesced %d missed fire times)", schedule.id, sweep_id, missed)
        return sweep_id


def _over_quota(session: Session, settings: Settings, owner: str) -> str | None:
    """Why a sweep of `owner` may not be queued now (the quotas of POST /v1/sweeps), or None."""
    limit = settings.quota(owner, "max_active_sweeps_per_token")
    active = store.count_active_for_owner(session, owner)
    if active >= limit:
        return f"{active} sweeps of this owner are queued or running; the quota max_active_sweeps_per_token is {limit}"
    queued = store.count_queued(session)
    if queued >= settings.max_queued_sweeps:
        return f"the queue is full ({queued} sweeps; max_queued_sweeps)"
    return None


def _times_between(schedule: Schedule, due_at: datetime, now: datetime, cap: int = 10_000) -> list[datetime]:
    """Fire times after `due_at` up to `now` that the coalesced run stands for (counted, capped)."""
    times = []
    iterator = croniter(schedule.cron, due_at.astimezone(ZoneInfo(schedule.timezone)))
    while len(times) < cap:
        moment = iterator.get_next(datetime)
        if moment > now:
            break
        times.append(moment)
    return times


class Scheduler:
    """A daemon thread that calls `fire_due` every `interval` seconds (and on `wake()`); `now` is injectable."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session], *, now: Clock = utcnow,
                 interval: float = 5.0, on_fire: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.settings, self.session_factory, self.now, self.interval = settings, session_factory, now, interval
        self.on_fire = on_fire
        self._poller = PollingThread("rdvae-scheduler", self.tick, lambda: self.interval)

    def start(self) -> None:
        self._poller.start()

    def stop(self) -> None:
        self._poller.stop()

    def wake(self) -> None:
        self._poller.wake()

    def tick(self) -> list[str]:
        started = fire_due(self.session_factory, self.settings, self.now())
        if started and self.on_fire is not None:
            self.on_fire()
        return started
