"""The runner with real driver processes (the fake-driver test double): FIFO queue, crash recovery, cancel."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from service_helpers import wait_until
from sqlalchemy.orm import Session, sessionmaker

from service.queue import store
from service.queue.db import session_scope
from service.queue.runner import Runner, driver_alive, submit_sweep
from service.settings import Settings
from workers.spec import SweepSpec

TINY = {"dataset": "digits", "n_trials": 3, "epochs": 1}


def _submit(factory: sessionmaker[Session], settings: Settings, **spec: object) -> str:
    with session_scope(factory) as session:
        return submit_sweep(
            session, SweepSpec.model_validate({**TINY, **spec}), owner="o", data_root=settings.data_root
        )


def _sweep(factory: sessionmaker[Session], sweep_id: str) -> store.Sweep:
    with session_scope(factory) as session:
        return store.get_sweep(session, sweep_id)


def _launches(settings: Settings, sweep_id: str) -> list[str]:
    path = settings.ray_storage_root / sweep_id / "launches"
    return path.read_text().split() if path.exists() else []


def _finished(factory: sessionmaker[Session], runner: Runner, sweep_id: str) -> store.Sweep | None:
    runner.tick()
    sweep = _sweep(factory, sweep_id)
    return sweep if sweep.status in store.FINISHED else None


def test_fifo_queue_respects_the_running_limit(settings: Settings, factory: sessionmaker[Session]) -> None:
    ids = [_submit(factory, settings, n_trials=1) for _ in range(3)]
    runner = Runner(settings, factory)
    order: list[str] = []
    while len(order) < 3:
        runner.tick()
        with session_scope(factory) as session:
            running = [s.id for s in store.running_sweeps(session)]
        assert len(running) <= settings.max_running_sweeps
        order += [sweep_id for sweep_id in running if sweep_id not in order]
    assert order == ids
    wait_until(lambda: _finished(factory, runner, ids[-1]), timeout=30)
    assert [_sweep(factory, i).status for i in ids] == ["succeeded"] * 3
    assert [_sweep(factory, i).completed for i in ids] == [1, 1, 1]


def test_restart_reattaches_to_a_live_driver(
    settings: Settings, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRIAL_SECONDS", "0.5")
    sweep_id = _submit(factory, settings, n_trials=4)
    Runner(settings, factory).tick()  # this runner then "dies": it is dropped without stop()
    first_pid = _sweep(factory, sweep_id).driver_pid
    assert driver_alive(settings.sweeps_dir / sweep_id)
    revived = Runner(settings, factory)
    sweep = wait_until(lambda: _finished(factory, revived, sweep_id), timeout=30)
    assert sweep.status == "succeeded"
    assert sweep.launches == 1 and sweep.driver_pid == first_pid
    assert len(_launches(settings, sweep_id)) == 1
    assert sweep.completed == 4 and len(sweep.result.trials) == 4


def test_restart_resumes_a_dead_driver_once(
    settings: Settings, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRIAL_SECONDS", "0.4")
    sweep_id = _submit(factory, settings, n_trials=4)
    runner = Runner(settings, factory)
    runner.tick()
    wait_until(lambda: (runner.tick(), _sweep(factory, sweep_id).completed >= 1)[1], timeout=30)
    os.killpg(_sweep(factory, sweep_id).driver_pid, signal.SIGKILL)  # the machine "crashed": driver gone too
    wait_until(lambda: not driver_alive(settings.sweeps_dir / sweep_id), timeout=10)
    revived = Runner(settings, factory)
    revived.tick()
    revived.tick()  # a second look must not launch a second driver
    assert _sweep(factory, sweep_id).launches == 2
    sweep = wait_until(lambda: _finished(factory, revived, sweep_id), timeout=30)
    assert sweep.status == "succeeded" and sweep.completed == 4
    assert len(_launches(settings, sweep_id)) == 2  # resumed once; finished trials were not re-run
    assert [t.number for t in sweep.result.trials] == [0, 1, 2, 3]


def test_cancel_running_and_queued(
    settings: Settings, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRIAL_SECONDS", "5")
    running_id = _submit(factory, settings, n_trials=4)
    queued_id = _submit(factory, settings, n_trials=4)
    runner = Runner(settings, factory)
    runner.tick()
    wait_until(lambda: (settings.sweeps_dir / running_id / "progress.jsonl").exists(), timeout=20)
    with session_scope(factory) as session:
        assert runner.request_cancel(session, queued_id) == "queued"
        assert runner.request_cancel(session, running_id) == "running"
    assert _sweep(factory, queued_id).status == "cancelled"
    sweep = wait_until(lambda: _finished(factory, runner, running_id), timeout=20)
    assert sweep.status == "cancelled" and sweep.result.cancelled
    assert _sweep(factory, queued_id).launches == 0
    with session_scope(factory) as session:
        assert runner.request_cancel(session, running_id) is None  # finished: nothing to cancel


def test_driver_failure_is_recorded_with_its_log(
    settings: Settings, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "1")
    sweep_id = _submit(factory, settings)
    runner = Runner(settings, factory)
    sweep = wait_until(lambda: _finished(factory, runner, sweep_id), timeout=20)
    assert sweep.status == "failed" and sweep.launches == 1
    # one readable line (the traceback and Ray's INFO lines stay in driver.log)
    assert sweep.error == "driver exited with 1: RuntimeError: fake driver: failing on purpose"


def test_a_sweep_whose_every_trial_failed_is_failed_with_the_most_common_error(
    settings: Settings, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TRIAL_ERROR", "RuntimeError: conv decoder needs image data")
    monkeypatch.setenv("FAKE_TRIAL_SECONDS", "0.05")
    sweep_id = _submit(factory, settings, n_trials=4)
    runner = Runner(settings, factory)
    sweep = wait_until(lambda: _finished(factory, runner, sweep_id), timeout=20)
    assert sweep.status == "failed" and sweep.failed == 4
    assert sweep.error == (
        "no trial succeeded: 4 failed; most common error (3x): RuntimeError: conv decoder needs image data"
    )


def test_submit_refuses_paths_outside_the_data_root(
    settings: Settings, factory: sessionmaker[Session], tmp_path: Path
) -> None:
    outside = tmp_path / "outside.npy"
    outside.write_bytes(b"")
    with pytest.raises(ValueError, match="dataset.path"):
        _submit(factory, settings, dataset={"name": "file", "path": str(outside)})


def test_one_runner_leads_per_state_dir(settings: Settings, factory: sessionmaker[Session]) -> None:
    settings.sweeps_dir.mkdir(parents=True)
    leader, follower = Runner(settings, factory), Runner(settings, factory)
    assert leader._lead() and not follower._lead()
    leader.stop()
    assert follower._lead()
    follower.stop()


def test_a_sweep_cancelled_while_the_runner_looks_is_never_launched(
    settings: Settings, factory: sessionmaker[Session]
) -> None:
    sweep_id = _submit(factory, settings)
    with session_scope(factory) as runner_view:
        sweep = store.get_sweep(runner_view, sweep_id)  # the runner has read it as queued...
        with session_scope(factory) as request:
            assert store.mark_cancel(request, sweep_id) == "queued"  # ...when a cancel lands
        assert not store.claim_queued(runner_view, sweep)
    Runner(settings, factory).tick()
    sweep = _sweep(factory, sweep_id)
    assert sweep.status == "cancelled" and sweep.launches == 0
    assert not (settings.sweeps_dir / sweep_id).exists()
