"""Ownership over real HTTP: a token acts only on its own sweeps and schedules (others' answer 404), admins on all."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from service_helpers import FAKE_DRIVER, TOKEN, TOKEN_B, ApiProcess, wait_until

from service.api.app import create_app
from service.api.auth import owner_of
from service.settings import Settings

ADMIN = "admin-token-5555555555"
TINY = {"dataset": "digits", "n_trials": 50, "epochs": 1}
SCHEDULE = {"cron": "0 2 * * *", "spec": {"dataset": "digits", "n_trials": 2, "epochs": 1}}


@pytest.fixture
def api(api_process: Callable[..., ApiProcess]) -> Iterator[ApiProcess]:
    yield api_process(RDVAE_ADMIN_TOKENS=ADMIN, RDVAE_DRIVER_COMMAND=FAKE_DRIVER, FAKE_TRIAL_SECONDS="2").start()


@pytest.mark.slow
def test_another_owners_sweep_cannot_be_cancelled_but_an_admin_can(api: ApiProcess) -> None:
    owner, other, admin = api.client(TOKEN), api.client(TOKEN_B), api.client(ADMIN)
    sweep_id = owner.post("/v1/sweeps", json=TINY).json()["id"]
    wait_until(lambda: owner.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "running", timeout=30)
    refused = other.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert refused.status_code == 404 and sweep_id in refused.json()["detail"]
    assert owner.get(f"/v1/sweeps/{sweep_id}").json()["cancel_requested"] is False
    assert other.get(f"/v1/sweeps/{sweep_id}").status_code == 200  # reads are open by default
    cancelled = admin.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
    assert cancelled.json()["owner"] == owner_of(TOKEN)  # the admin acted on it; the owner is unchanged


@pytest.mark.slow
def test_another_owners_schedule_cannot_be_changed_but_an_admin_can(api: ApiProcess) -> None:
    owner, other, admin = api.client(TOKEN), api.client(TOKEN_B), api.client(ADMIN)
    schedule_id = owner.post("/v1/schedules", json=SCHEDULE).json()["id"]
    path = f"/v1/schedules/{schedule_id}"
    hijack = {"cron": "* * * * *", "spec": {"dataset": "digits", "n_trials": 9, "epochs": 1}}
    assert other.patch(path, json=hijack).status_code == 404
    assert other.post(f"{path}/pause").status_code == 404
    assert other.post(f"{path}/resume").status_code == 404
    assert other.delete(path).status_code == 404
    kept = owner.get(path).json()
    assert kept["cron"] == SCHEDULE["cron"] and kept["spec"]["n_trials"] == 2 and kept["paused"] is False
    assert admin.post(f"{path}/pause").json()["paused"] is True
    assert owner.patch(path, json={"cron": "0 3 * * *"}).json()["cron"] == "0 3 * * *"
    assert owner.delete(path).status_code == 204


def test_closed_reads_show_only_the_callers_objects(settings: Settings) -> None:
    closed = settings.model_copy(update={"open_reads": False, "admin_tokens": [ADMIN]})
    with TestClient(create_app(closed, start_runner=False)) as client:
        mine, theirs, admin = ({"Authorization": f"Bearer {token}"} for token in (TOKEN, TOKEN_B, ADMIN))
        sweep_id = client.post("/v1/sweeps", json=TINY, headers=mine).json()["id"]
        schedule_id = client.post("/v1/schedules", json=SCHEDULE, headers=mine).json()["id"]
        for path in (f"/v1/sweeps/{sweep_id}", f"/v1/sweeps/{sweep_id}/trials", f"/v1/schedules/{schedule_id}"):
            assert client.get(path, headers=theirs).status_code == 404, path
            assert client.get(path, headers=mine).status_code == 200, path
            assert client.get(path, headers=admin).status_code == 200, path
        assert client.get("/v1/sweeps", headers=theirs).json()["total"] == 0
        assert client.get("/v1/sweeps", headers=admin).json()["total"] == 1
        assert client.get("/v1/schedules", headers=theirs).json()["total"] == 0
        assert client.get("/v1/schedules", headers=mine).json()["total"] == 1


def test_a_token_owns_a_limited_number_of_schedules(settings: Settings) -> None:
    limited = settings.model_copy(update={"max_schedules_per_token": 2})
    with TestClient(create_app(limited, start_runner=False)) as client:
        mine, theirs = ({"Authorization": f"Bearer {token}"} for token in (TOKEN, TOKEN_B))
        for _ in range(2):
            assert client.post("/v1/schedules", json=SCHEDULE, headers=mine).status_code == 201
        over = client.post("/v1/schedules", json=SCHEDULE, headers=mine)
        assert over.status_code == 429 and over.json()["limit"] == "max_schedules_per_token"
        assert client.post("/v1/schedules", json=SCHEDULE, headers=theirs).status_code == 201


def test_sweeps_can_be_found_by_id_prefix(settings: Settings) -> None:
    with TestClient(create_app(settings, start_runner=False)) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ids = [client.post("/v1/sweeps", json=TINY, headers=auth).json()["id"] for _ in range(2)]
        found = client.get("/v1/sweeps", params={"id_prefix": ids[0][:6]}).json()
        assert [item["id"] for item in found["items"]] == [ids[0]]
        assert client.get("/v1/sweeps", params={"id_prefix": "XYZ"}).status_code == 422
