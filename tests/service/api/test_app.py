"""The HTTP contract in-process (runner off): validation, auth, quotas, limits, 404/409, pagination, metrics."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from service_helpers import TOKEN, TOKEN_B

from service.api.app import create_app
from service.api.auth import check_bind, owner_of
from service.settings import Quota, Settings

TINY = {"dataset": "digits", "n_trials": 2, "epochs": 1}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, start_runner=False)) as test_client:
        yield test_client


def _fields(response) -> list[str]:  # noqa: ANN001 - httpx.Response
    return [error["field"] for error in response.json()["errors"]]


def test_submit_is_accepted_queued_and_readable(client: TestClient) -> None:
    answer = client.post("/v1/sweeps", json={**TINY, "name": "tiny"}, headers=AUTH)
    assert answer.status_code == 202
    body = answer.json()
    assert body["status"] == "queued" and body["queue_position"] == 1
    assert answer.headers["location"] == body["status_url"] == f"/v1/sweeps/{body['id']}"
    detail = client.get(body["status_url"]).json()
    assert detail["name"] == "tiny" and detail["owner"] == owner_of(TOKEN)
    assert detail["progress"] == {
        "total": 2,
        "done": 0,
        "completed": 0,
        "stopped": 0,
        "running": 0,
        "failed": 0,
        "collapsed": 0,
    }
    assert detail["spec"]["n_trials"] == 2 and detail["spec"]["model"]["latent_dim"] == 16
    assert client.get(f"/v1/sweeps/{body['id']}/trials").json()["trials"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n_trials": 0}, "body.n_trials"),
        ({"epochs": "many"}, "body.epochs"),
        ({"search_space": {"beta": {"low": 5, "high": 1}}}, "body.search_space.beta"),
        ({"dataset": "imagenet"}, "body.dataset.name"),
        ({"unknown_field": 1}, "body.unknown_field"),
        ({"objectives": [{"metric": "elbo"}, {"metric": "elbo"}]}, "body"),
        ({"model": {"decoder": "made", "likelihood": "gaussian"}}, "body.model"),
        ({"constraints": [{"metric": "rate", "value": "nan"}]}, "body.constraints.0.value"),
        # C_t could not reach C before the last epoch (1 epoch of 11 steps on digits): refused at submit.
        (
            {"search_space": {"objective": ["capacity"], "capacity_anneal_steps": 1000}},
            "body.search_space.capacity_anneal_steps",
        ),
        ({"early_stopping": {"collapse_rate_threshold": 0.3}, "collapse_rate_threshold": 0.2}, "body"),
    ],
)
def test_invalid_specs_name_the_field(client: TestClient, body: dict, field: str) -> None:
    answer = client.post("/v1/sweeps", json={**TINY, **body}, headers=AUTH)
    assert answer.status_code == 422
    assert field in _fields(answer)
    assert all(error["reason"] for error in answer.json()["errors"])


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b"null", b'"digits"', b'{"name": "\\ud800"}', b"\xff\xfe"],
)
def test_malformed_bodies_are_422(client: TestClient, content: bytes) -> None:
    answer = client.post("/v1/sweeps", content=content, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text


def test_dataset_paths_are_confined_to_the_data_root(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    np.save(settings.data_root / "ok.npy", np.random.default_rng(0).random((20, 16)).astype(np.float32))
    outside = tmp_path / "secret.npy"
    np.save(outside, np.zeros((20, 16), dtype=np.float32))
    (settings.data_root / "link.npy").symlink_to(outside)
    for path in ("../secret.npy", str(outside), "link.npy", "missing.npy"):
        answer = client.post("/v1/sweeps", json={**TINY, "dataset": {"name": "file", "path": path}}, headers=AUTH)
        assert answer.status_code == 422 and _fields(answer) == ["body.dataset.path"], path
    grey = {"name": "file", "path": "ok.npy", "binarization": "static"}  # user files are binarised only when asked
    accepted = client.post("/v1/sweeps", json={**TINY, "dataset": grey}, headers=AUTH)
    assert accepted.status_code == 202


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"learning_rate": NaN}', "body.learning_rate"),
        (b'{"search_space": {"beta": {"low": 0.1, "high": Infinity}}}', "body.search_space.beta.high"),
        (b'{"search_space": {"C": {"low": 0, "high": Infinity}}}', "body.search_space.C.high"),
        (b'{"early_stopping": {"reduction_factor": Infinity}}', "body.early_stopping.reduction_factor"),
        (b'{"constraints": [{"metric": "rate", "value": -Infinity}]}', "body.constraints.0.value"),
        (b'{"warm_start_params": [{"beta": NaN}]}', "body.warm_start_params.0.beta.float"),
    ],
)
def test_non_finite_numbers_are_refused_not_queued(client: TestClient, content: bytes, field: str) -> None:
    # Python's JSON parser reads NaN/Infinity; Infinity used to pass `gt=0` checks and reach Optuna
    answer = client.post("/v1/sweeps", content=content, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert field in _fields(answer) and "finite" in answer.text
    assert client.get("/v1/sweeps").json()["total"] == 0


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"name": "a\\u0000b"}', "body.name"),
        (b'{"name": "\\ud800"}', "body.name"),
        (b'{"mlflow": {"experiment_name": "exp\\nriment"}}', "body.mlflow.experiment_name"),
        (b'{"mlflow": {"registered_model_name": "\\udfff"}}', "body.mlflow.registered_model_name"),
        (b'{"warm_start_params": [{"beta": "\\u0007"}]}', "body.warm_start_params"),
    ],
)
def test_control_characters_and_lone_surrogates_in_names_are_refused(
    client: TestClient, content: bytes, field: str
) -> None:
    # NUL breaks Postgres text columns and a lone surrogate cannot be written back as UTF-8 (it was a 500)
    answer = client.post("/v1/sweeps", content=content, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert field in _fields(answer)
    assert client.get("/v1/sweeps").json()["total"] == 0


def test_a_seed_beyond_the_samplers_range_is_refused(client: TestClient) -> None:
    # Optuna's samplers take 0 .. 2**32 - 1: a larger seed was accepted and failed in the driver
    refused = client.post("/v1/sweeps", json={**TINY, "seed": 2**32}, headers=AUTH)
    assert refused.status_code == 422 and _fields(refused) == ["body.seed"]
    assert client.post("/v1/sweeps", json={**TINY, "seed": 2**32 - 1}, headers=AUTH).status_code == 202


def test_malformed_json_names_the_body_and_the_position(client: TestClient) -> None:
    answer = client.post("/v1/sweeps", content=b'{"n_trials": ', headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"field": "body", "reason": "not valid JSON at character 13: Expecting value"}]


@pytest.mark.parametrize("path", ["a" * 5000 + ".npy", "a\x00b.npy"])
def test_unusable_dataset_paths_are_422_not_500(client: TestClient, path: str) -> None:
    spec = {**TINY, "dataset": {"name": "file", "path": path}}
    answer = client.post("/v1/sweeps", json=spec, headers=AUTH)
    assert answer.status_code == 422 and _fields(answer) == ["body.dataset.path"]
    assert answer.json()["errors"][0]["reason"].startswith("data path ")
    scheduled = client.post("/v1/schedules", json={"cron": "0 2 * * *", "spec": spec}, headers=AUTH)
    assert scheduled.status_code == 422 and _fields(scheduled) == ["body.spec.dataset.path"]


def test_schedules_keep_to_the_owners_quotas(client: TestClient, settings: Settings) -> None:
    # a schedule used to accept a spec its owner could not submit, and then fire it without the quota
    too_many = {"cron": "0 2 * * *", "spec": {**TINY, "n_trials": settings.max_trials_per_sweep + 1}}
    refused = client.post("/v1/schedules", json=too_many, headers=AUTH)
    assert refused.status_code == 422 and refused.json()["limit"] == "max_trials_per_sweep"
    assert _fields(refused) == ["body.spec.n_trials"]
    created = client.post("/v1/schedules", json={"cron": "0 2 * * *", "spec": TINY}, headers=AUTH).json()
    too_long = {"spec": {**TINY, "epochs": settings.max_epochs + 1}}
    patched = client.patch(f"/v1/schedules/{created['id']}", json=too_long, headers=AUTH)
    assert patched.status_code == 422 and patched.json()["limit"] == "max_epochs"
    assert client.get(f"/v1/schedules/{created['id']}").json()["spec"]["epochs"] == TINY["epochs"]
    named = client.post("/v1/schedules", json={"cron": "0 2 * * *", "name": "a\x00", "spec": TINY}, headers=AUTH)
    assert named.status_code == 422 and _fields(named) == ["body.name"]


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}]
)
def test_mutations_need_a_valid_token(client: TestClient, headers: dict) -> None:
    assert client.post("/v1/sweeps", json=TINY, headers=headers).status_code == 401
    assert client.post("/v1/sweeps/abc/cancel", headers=headers).status_code == 401
    assert client.get("/v1/sweeps").status_code == 200  # reads are open by default


def test_closed_reads_need_a_token(settings: Settings) -> None:
    closed = settings.model_copy(update={"open_reads": False})
    with TestClient(create_app(closed, start_runner=False)) as client:
        assert client.get("/v1/sweeps").status_code == 401
        assert client.get("/v1/sweeps/abc").status_code == 401
        assert client.get("/v1/sweeps", headers={"Authorization": f"Bearer {TOKEN_B}"}).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_quotas_name_the_limit(client: TestClient, settings: Settings) -> None:
    too_many = client.post("/v1/sweeps", json={**TINY, "n_trials": settings.max_trials_per_sweep + 1}, headers=AUTH)
    assert too_many.status_code == 422 and too_many.json()["limit"] == "max_trials_per_sweep"
    assert _fields(too_many) == ["body.n_trials"]
    too_long = client.post("/v1/sweeps", json={**TINY, "epochs": settings.max_epochs + 1}, headers=AUTH)
    assert too_long.status_code == 422 and too_long.json()["limit"] == "max_epochs"
    for _ in range(settings.max_active_sweeps_per_token):
        assert client.post("/v1/sweeps", json=TINY, headers=AUTH).status_code == 202
    over = client.post("/v1/sweeps", json=TINY, headers=AUTH)
    assert over.status_code == 429 and over.json()["limit"] == "max_active_sweeps_per_token"
    other = client.post("/v1/sweeps", json=TINY, headers={"Authorization": f"Bearer {TOKEN_B}"})
    assert other.status_code == 202  # the quota is per token


def test_quotas_can_be_overridden_per_token(settings: Settings) -> None:
    strict = {owner_of(TOKEN_B): Quota(max_epochs=1, max_active_sweeps_per_token=1)}
    with TestClient(create_app(settings.model_copy(update={"token_quotas": strict}), start_runner=False)) as client:
        other = {"Authorization": f"Bearer {TOKEN_B}"}
        refused = client.post("/v1/sweeps", json={**TINY, "epochs": 2}, headers=other)
        assert refused.status_code == 422 and refused.json()["limit"] == "max_epochs"
        assert client.post("/v1/sweeps", json=TINY, headers=other).status_code == 202
        assert client.post("/v1/sweeps", json=TINY, headers=other).status_code == 429
        assert client.post("/v1/sweeps", json={**TINY, "epochs": 2}, headers=AUTH).status_code == 202


def test_token_quotas_parse_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDVAE_TOKEN_QUOTAS", '{"token-abc": {"max_epochs": 3}}')
    monkeypatch.setenv("RDVAE_API_TOKENS", "a, b ,")
    loaded = Settings()
    assert loaded.api_tokens == ["a", "b"]
    assert loaded.quota("token-abc", "max_epochs") == 3
    assert loaded.quota("token-abc", "max_trials_per_sweep") == loaded.max_trials_per_sweep


def test_request_bodies_are_size_limited(client: TestClient, settings: Settings) -> None:
    big = {**TINY, "name": "x" * 100, "padding": "y" * settings.max_body_bytes}
    answer = client.post("/v1/sweeps", json=big, headers=AUTH)
    assert answer.status_code == 413 and answer.json()["limit"] == "max_body_bytes"

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        yield b"z" * settings.max_body_bytes
        yield b'"}'

    streamed = client.post("/v1/sweeps", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert streamed.status_code == 413


def test_unknown_ids_404_and_illegal_transitions_409(client: TestClient) -> None:
    for path in ("/v1/sweeps/nope", "/v1/sweeps/nope/trials", "/v1/sweeps/nope/pareto", "/v1/sweeps/nope/plot.png"):
        assert client.get(path).status_code == 404, path
    assert client.post("/v1/sweeps/nope/cancel", headers=AUTH).status_code == 404
    sweep_id = client.post("/v1/sweeps", json=TINY, headers=AUTH).json()["id"]
    assert client.get(f"/v1/sweeps/{sweep_id}/pareto").status_code == 409  # not finished yet
    assert client.get(f"/v1/sweeps/{sweep_id}/plot.png").status_code == 409
    cancelled = client.post(f"/v1/sweeps/{sweep_id}/cancel", headers=AUTH)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/sweeps/{sweep_id}/cancel", headers=AUTH)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_list_filters_by_status_and_paginates(client: TestClient) -> None:
    ids = [
        client.post("/v1/sweeps", json=TINY, headers=hdr).json()["id"]
        for hdr in (AUTH, AUTH, {"Authorization": f"Bearer {TOKEN_B}"})
    ]
    client.post(f"/v1/sweeps/{ids[0]}/cancel", headers=AUTH)
    page = client.get("/v1/sweeps", params={"limit": 2}).json()
    assert page["total"] == 3 and [item["id"] for item in page["items"]] == [ids[2], ids[1]]
    assert page["next_offset"] == 2
    last = client.get("/v1/sweeps", params={"limit": 2, "offset": 2}).json()
    assert [item["id"] for item in last["items"]] == [ids[0]] and last["next_offset"] is None
    cancelled = client.get("/v1/sweeps", params={"status": "cancelled"}).json()
    assert [item["id"] for item in cancelled["items"]] == [ids[0]]
    assert client.get("/v1/sweeps", params={"status": "bogus"}).status_code == 422
    assert client.get("/v1/sweeps", params={"limit": 0}).status_code == 422


def test_metrics_and_readiness(client: TestClient) -> None:
    client.post("/v1/sweeps", json=TINY, headers=AUTH)
    client.get("/v1/sweeps")
    text = client.get("/metrics").text
    assert 'rdvae_sweeps{status="queued"} 1.0' in text
    assert "rdvae_queue_length 1.0" in text
    assert "rdvae_trials_run_total 0.0" in text
    assert 'rdvae_http_request_duration_seconds_count{method="POST",route="/v1/sweeps",status="202"} 1.0' in text
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"]["ok"]


def test_readiness_fails_when_ray_or_mlflow_is_unreachable(settings: Settings) -> None:
    from service_helpers import free_port

    dead = settings.model_copy(
        update={"ray_address": f"127.0.0.1:{free_port()}", "mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}"}
    )
    with TestClient(create_app(dead, start_runner=False)) as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    checks = answer.json()["checks"]
    assert not checks["ray"]["ok"] and not checks["mlflow"]["ok"] and checks["database"]["ok"]


def test_openapi_documents_versioned_endpoints_with_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {
        "/v1/sweeps",
        "/v1/sweeps/{sweep_id}",
        "/v1/sweeps/{sweep_id}/cancel",
        "/v1/sweeps/{sweep_id}/trials",
        "/v1/sweeps/{sweep_id}/pareto",
        "/v1/sweeps/{sweep_id}/plot.png",
    } <= set(schema["paths"])
    post = schema["paths"]["/v1/sweeps"]["post"]
    assert "tiny" in post["requestBody"]["content"]["application/json"]["examples"]
    assert {"202", "401", "413", "422", "429"} <= set(post["responses"])


def test_no_token_refuses_a_public_bind(tmp_path: Path) -> None:
    open_settings = Settings(state_dir=tmp_path)
    check_bind(open_settings, "127.0.0.1")
    with pytest.raises(RuntimeError, match="RDVAE_API_TOKENS"):
        check_bind(open_settings, "0.0.0.0")
    check_bind(open_settings.model_copy(update={"insecure": True}), "0.0.0.0")
    check_bind(open_settings.model_copy(update={"api_tokens": ["t"]}), "0.0.0.0")
    # the real server: the lifespan refuses before uvicorn binds any socket
    env = {"PATH": "/usr/bin:/bin", "RDVAE_STATE_DIR": str(tmp_path), "HOME": str(tmp_path)}
    started = subprocess.run(
        [sys.executable, "-m", "uvicorn", "service.api.app:app", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode != 0 and "refusing to serve on '0.0.0.0'" in started.stderr
