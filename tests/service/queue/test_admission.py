"""Admission control: resources beyond the real Ray cluster are 422, a sweep that starts no trial is failed, and
the queue is round-robin by owner (real fake-driver processes under the real runner)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from service_helpers import TOKEN, wait_until
from sqlalchemy.orm import Session, sessionmaker

from service.api.app import create_app
from service.queue import admission, store
from service.queue.db import session_scope
from service.queue.runner import Runner, submit_sweep
from service.settings import Settings
from workers.spec import SweepSpec

AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY = {"dataset": "digits", "n_trials": 1, "epochs": 1}


@pytest.fixture
def on_ray(settings: Settings, ray_cluster: str) -> Iterator[TestClient]:
    admission._cache.clear()
    with TestClient(create_app(settings.model_copy(update={"ray_address": ray_cluster}), start_runner=False)) as c:
        yield c
    admission._cache.clear()


def _fields(answer) -> list[str]:  # noqa: ANN001 - httpx.Response
    return [error["field"] for error in answer.json()["errors"]]


@pytest.mark.slow
def test_resources_the_ray_cluster_never_has_are_refused(on_ray: TestClient) -> None:
    # the test head offers 4 CPUs and no GPU; such a sweep used to sit `running` for ever, blocking the queue
    too_many = on_ray.post("/v1/sweeps", json={**TINY, "resources": {"cpus": 8}}, headers=AUTH)
    assert too_many.status_code == 422 and _fields(too_many) == ["body.resources.cpus"]
    assert "8 CPUs" in too_many.json()["detail"] and "has 4" in too_many.json()["detail"]
    no_gpu = on_ray.post("/v1/sweeps", json={**TINY, "resources": {"gpus": 0.5}}, headers=AUTH)
    assert no_gpu.status_code == 422 and _fields(no_gpu) == ["body.resources.gpus"]
    scheduled = {"cron": "0 2 * * *", "spec": {**TINY, "resources": {"cpus": 5}}}
    refused = on_ray.post("/v1/schedules", json=scheduled, headers=AUTH)
    assert refused.status_code == 422 and _fields(refused) == ["body.spec.resources.cpus"]
    assert on_ray.post("/v1/sweeps", json={**TINY, "resources": {"cpus": 4}}, headers=AUTH).status_code == 202


def test_without_ray_the_local_machine_is_the_limit(settings: Settings) -> None:
    admission._cache.clear()
    with TestClient(create_app(settings, start_runner=False)) as client:
        cpus = (os.cpu_count() or 1) + 1
        answer = client.post("/v1/sweeps", json={**TINY, "resources": {"cpus": cpus}}, headers=AUTH)
        assert answer.status_code == 422 and _fields(answer) == ["body.resources.cpus"]
        assert "this machine" in answer.json()["detail"]
    fixed = settings.model_copy(update={"cluster_cpus": 64.0, "cluster_gpus": 1.0})
    with TestClient(create_app(fixed, start_runner=False)) as client:
        wanted = {**TINY, "resources": {"cpus": cpus, "gpus": 1.0}}
        assert client.post("/v1/sweeps", json=wanted, headers=AUTH).status_code == 202


def _submit(factory: sessionmaker[Session], settings: Settings, owner: str) -> str:
    with session_scope(factory) as session:
        spec = SweepSpec.model_validate(TINY)
        return submit_sweep(session, spec, owner=owner, data_root=settings.data_root)


def test_a_sweep_that_starts_no_trial_in_time_is_failed_with_the_reason(
    settings: Settings, factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NO_START", "1")
    runner = Runner(settings.model_copy(update={"trial_start_timeout_s": 1.0}), factory)
    sweep_id = _submit(factory, settings, "o")

    def finished() -> store.Sweep | None:
        runner.tick()
        with session_scope(factory) as session:
            sweep = store.get_sweep(session, sweep_id)
        return sweep if sweep.status in store.FINISHED else None

    sweep = wait_until(finished, timeout=30)
    assert sweep.status == "failed"
    assert sweep.error.startswith("no trial started within 1 s") and "1 CPUs" in sweep.error


def test_the_queue_is_round_robin_by_owner(settings: Settings, factory: sessionmaker[Session]) -> None:
    # owner a queued three sweeps before b's one; b used to wait behind all of them
    first, second, third = (_submit(factory, settings, "a") for _ in range(3))
    other = _submit(factory, settings, "b")
    runner = Runner(settings, factory)
    order: list[str] = []
    while len(order) < 4:
        runner.tick()
        with session_scope(factory) as session:
            order += [s.id for s in store.running_sweeps(session) if s.id not in order]
    assert order == [first, other, second, third]

    def all_finished() -> bool:
        runner.tick()
        with session_scope(factory) as session:
            return all(store.get_sweep(session, i).status == "succeeded" for i in (first, second, third, other))

    wait_until(all_finished, timeout=30)
