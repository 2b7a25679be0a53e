"""Scheduled sweeps under a controllable clock: fire once, record the sweep, coalesce misfires, survive restarts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

import service.scheduling.scheduler as scheduler_module
from service.queue import store
from service.queue.db import make_engine, make_session_factory, migrate, session_scope
from service.scheduling.scheduler import Schedule, Scheduler, check_cron, check_timezone, create_schedule, fire_times
from service.settings import Settings
from workers.results import Selection, SweepResult, TrialOutcome
from workers.spec import SweepSpec

T0 = datetime(2026, 11, 26, 10, 30, tzinfo=UTC)
SPEC = SweepSpec(name="nightly", dataset="digits", n_trials=2, epochs=1)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime) -> None:
        self.moment = start

    def __call__(self) -> datetime:
        return self.moment


def _boot(settings: Settings, clock: Clock) -> Scheduler:
    """What an API start-up does: engine, migrations, a scheduler (a fresh one models a restart)."""
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    return Scheduler(settings, make_session_factory(engine), now=clock)


def _add(scheduler: Scheduler, cron: str = "0 * * * *", timezone: str = "UTC", **options: bool) -> str:
    with session_scope(scheduler.session_factory) as session:
        schedule = create_schedule(session, name="hourly", cron=cron, timezone=timezone, spec=SPEC, owner="tester",
                                   now=scheduler.now(), warm_start=options.get("warm_start", False),
                                   paused=options.get("paused", False))  # fmt: skip
        return schedule.id


def _schedule(scheduler: Scheduler, schedule_id: str) -> Schedule:
    with session_scope(scheduler.session_factory) as session:
        return session.get(Schedule, schedule_id)


def _sweeps_from(scheduler: Scheduler, schedule_id: str) -> list[store.Sweep]:
    with session_scope(scheduler.session_factory) as session:
        return list(session.scalars(select(store.Sweep).where(store.Sweep.origin == f"schedule:{schedule_id}")))


def test_fires_once_at_its_time_and_records_the_sweep(settings: Settings) -> None:
    clock = Clock(T0)
    scheduler = _boot(settings, clock)
    schedule_id = _add(scheduler)
    clock.moment = T0 + timedelta(minutes=29, seconds=59)
    assert scheduler.tick() == []
    clock.moment = T0 + timedelta(minutes=30)
    (sweep_id,) = scheduler.tick()
    clock.moment += timedelta(seconds=30)
    assert scheduler.tick() == [], "a second tick in the same minute must not fire again"
    schedule = _schedule(scheduler, schedule_id)
    assert schedule.last_sweep_id == sweep_id and schedule.fire_count == 1 and schedule.missed_count == 0
    (sweep,) = _sweeps_from(scheduler, schedule_id)
    assert sweep.id == sweep_id and sweep.status == "queued" and sweep.owner == "tester"
    assert sweep.spec == SPEC
    assert schedule.next_fire_at.replace(tzinfo=UTC) == datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def test_restart_neither_double_fires_nor_skips(settings: Settings) -> None:
    clock = Clock(T0)
    first = _boot(settings, clock)
    schedule_id = _add(first)
    clock.moment = datetime(2026, 11, 26, 11, 0, 5, tzinfo=UTC)
    assert len(first.tick()) == 1
    # Restart in the same minute: the fire was committed with its next time, so nothing fires twice.
    assert _boot(settings, clock).tick() == []
    # Down from 11:00 until 14:10: 12:00, 13:00 and 14:00 were missed; coalesce makes them one sweep now.
    clock.moment = datetime(2026, 11, 26, 14, 10, tzinfo=UTC)
    restarted = _boot(settings, clock)
    assert len(restarted.tick()) == 1
    assert restarted.tick() == []
    schedule = _schedule(restarted, schedule_id)
    assert schedule.fire_count == 2 and schedule.missed_count == 2
    assert schedule.next_fire_at.replace(tzinfo=UTC) == datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    assert len(_sweeps_from(restarted, schedule_id)) == 2


def test_crash_before_commit_fires_after_restart(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(T0)
    scheduler = _boot(settings, clock)
    schedule_id = _add(scheduler)
    clock.moment = T0 + timedelta(hours=1)

    def crash(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("power cut while inserting the sweep")

    monkeypatch.setattr(scheduler_module, "submit_sweep", crash)
    with pytest.raises(RuntimeError):
        scheduler.tick()
    monkeypatch.undo()
    assert _sweeps_from(scheduler, schedule_id) == []
    assert _schedule(scheduler, schedule_id).fire_count == 0, "the rolled-back fire left no trace"
    assert len(_boot(settings, clock).tick()) == 1, "the missed fire is not skipped after the restart"


def test_two_processes_on_one_database_fire_once(settings: Settings) -> None:
    clock = Clock(T0)
    a, b = _boot(settings, clock), _boot(settings, clock)
    schedule_id = _add(a)
    clock.moment = T0 + timedelta(hours=1)
    assert len(a.tick()) + len(b.tick()) == 1
    assert len(_sweeps_from(a, schedule_id)) == 1


def test_pause_resume_and_timezone(settings: Settings) -> None:
    clock = Clock(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))
    scheduler = _boot(settings, clock)
    schedule_id = _add(scheduler, cron="30 2 * * *", timezone="Europe/Paris")
    upcoming = _schedule(scheduler, schedule_id).upcoming(clock(), 2)
    # 02:30 does not exist on 29 March 2026 in Paris (clocks jump 02:00 -> 03:00); croniter moves it to 03:00.
    assert [moment.isoformat() for moment in upcoming] == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    with session_scope(scheduler.session_factory) as session:
        schedule = session.get(Schedule, schedule_id)
        schedule.paused = True
        scheduler_module.reschedule(schedule, clock())
    clock.moment = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)
    assert scheduler.tick() == [], "a paused schedule never fires"
    with session_scope(scheduler.session_factory) as session:
        schedule = session.get(Schedule, schedule_id)
        schedule.paused = False
        scheduler_module.reschedule(schedule, clock())
    assert scheduler.tick() == [], "resuming does not catch up the paused days"
    clock.moment = datetime(2026, 4, 3, 0, 30, tzinfo=UTC)  # 02:30 in Paris (UTC+2)
    assert len(scheduler.tick()) == 1


def test_warm_start_records_the_previous_pareto_front(settings: Settings) -> None:
    clock = Clock(T0)
    scheduler = _boot(settings, clock)
    schedule_id = _add(scheduler, warm_start=True)
    clock.moment = T0 + timedelta(hours=1)
    (first,) = scheduler.tick()
    front = [
        TrialOutcome(trial_id=t, number=0, status="completed", params={"beta": 0.5, "decoder": "made"})
        for t in ("a", "b")
    ]  # two trials at one point (a warm start and its re-sample): tried once next time
    result = SweepResult(name="nightly", trials=front, selection=Selection(front=front, recommended=front[0]))
    with session_scope(scheduler.session_factory) as session:
        sweep = store.get_sweep(session, first)
        store.apply_result(sweep, result)
        sweep.status = "succeeded"
    clock.moment += timedelta(hours=1)
    (second,) = scheduler.tick()
    schedule = _schedule(scheduler, schedule_id)
    assert schedule.last_sweep_id == second
    assert schedule.last_warm_start_json == '[{"beta": 0.5, "decoder": "made"}]'
    if scheduler_module.WARM_START_FIELD in SweepSpec.model_fields:
        (sweep,) = [s for s in _sweeps_from(scheduler, schedule_id) if s.id == second]
        assert getattr(sweep.spec, scheduler_module.WARM_START_FIELD) == [{"beta": 0.5, "decoder": "made"}]


@pytest.mark.parametrize("cron", ["61 * * * *", "* * * * * *", "0 0 30 2 *", "every day"])
def test_bad_cron_is_rejected(cron: str) -> None:
    with pytest.raises(ValueError):
        check_cron(cron)


def test_bad_timezone_is_rejected_and_fire_times_are_local(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown timezone"):
        check_timezone("Mars/Olympus_Mons")
    times = fire_times("0 9 * * 1", "America/New_York", datetime(2026, 11, 26, tzinfo=UTC), 2)
    assert [t.isoformat() for t in times] == ["2026-11-30T09:00:00-05:00", "2026-12-07T09:00:00-05:00"]


def test_firings_count_against_the_owners_active_sweep_quota(settings: Settings) -> None:
    # six every-minute schedules used to give one token 6 active sweeps against a quota of 4, and 6 more a minute
    clock = Clock(T0)
    scheduler = _boot(settings, clock)
    ids = [_add(scheduler, cron="* * * * *") for _ in range(settings.max_active_sweeps_per_token + 1)]
    clock.moment = T0 + timedelta(minutes=1)
    assert len(scheduler.tick()) == settings.max_active_sweeps_per_token
    clock.moment = T0 + timedelta(minutes=2)
    assert scheduler.tick() == []
    with session_scope(scheduler.session_factory) as session:
        assert store.count_active_for_owner(session, "tester") == settings.max_active_sweeps_per_token
    skipped = [_schedule(scheduler, schedule_id) for schedule_id in ids]
    assert all("max_active_sweeps_per_token" in (schedule.last_error or "") for schedule in skipped)


def test_each_firing_gets_its_own_sampler_seed(settings: Settings) -> None:
    # a fixed seed per fire made a warm-started sweep re-sample the points it started from (2 of 4 duplicated)
    clock = Clock(T0)
    scheduler = _boot(settings, clock)
    schedule_id = _add(scheduler)
    for hour in (1, 2, 3):
        clock.moment = T0 + timedelta(hours=hour)
        assert len(scheduler.tick()) == 1
    seeds = sorted(sweep.spec.seed for sweep in _sweeps_from(scheduler, schedule_id))
    assert seeds == [SPEC.seed, SPEC.seed + 1, SPEC.seed + 2]
