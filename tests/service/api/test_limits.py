"""Input limits: hostile spec files for the CLI, strict JSON types, over-deep JSON, 405s, and an OpenAPI document
as strict as the validation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import TOKEN, free_port

from service.api.app import create_app
from service.settings import Settings

RDVAE = str(Path(sys.executable).parent / "rdvae")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY = {"dataset": "digits", "n_trials": 2, "epochs": 1}
LAUGHS = "\n".join(
    ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, start_runner=False)) as test_client:
        yield test_client


def _submit_file(path: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "RDVAE_URL": f"http://127.0.0.1:{free_port()}", "RDVAE_TOKEN": TOKEN}  # nothing listens
    started = time.monotonic()
    answer = subprocess.run([RDVAE, "submit", path], env=env, capture_output=True, text=True, timeout=60)
    return answer, time.monotonic() - started


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (LAUGHS, "expands to more than 100000 values (YAML aliases?)"),  # used to run > 90 s of CPU
        ("a: &x [*x]\n", "nested deeper than 64 levels"),  # used to print a RecursionError traceback
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "cannot be parsed: RecursionError"),
    ],
)
def test_hostile_yaml_is_one_line_and_exit_2(tmp_path: Path, content: str, reason: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(content)
    answer, seconds = _submit_file(str(spec))
    assert answer.returncode == 2 and reason in answer.stderr, answer.stderr
    assert "Traceback" not in answer.stderr and len(answer.stderr.strip().splitlines()) == 1
    assert seconds < 20


def test_an_endless_spec_file_is_refused_by_size() -> None:
    answer, seconds = _submit_file("/dev/zero")  # used to read 15 GB in 60 s
    assert answer.returncode == 2 and "larger than 1048576 bytes" in answer.stderr, answer.stderr
    assert seconds < 20


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n_trials": True}, "body.n_trials"),
        ({"n_trials": "3"}, "body.n_trials"),
        ({"epochs": 1.5}, "body.epochs"),
        ({"resources": {"cpus": "1"}}, "body.resources.cpus"),
        ({"mlflow": {"log_models": "yes"}}, "body.mlflow.log_models"),
    ],
)
def test_types_are_strict(client: TestClient, body: dict, field: str) -> None:
    answer = client.post("/v1/sweeps", json={**TINY, **body}, headers=AUTH)
    assert answer.status_code == 422 and field in [error["field"] for error in answer.json()["errors"]]


def test_over_deep_json_says_so(client: TestClient) -> None:
    body = b'{"name": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    answer = client.post("/v1/sweeps", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {"field": "body", "reason": "JSON nested too deeply (the limit is about 1000 levels)"}
    ]


def test_405_lists_every_allowed_method(client: TestClient) -> None:
    collection = client.delete("/v1/sweeps")
    assert collection.status_code == 405 and collection.headers["allow"] == "GET, POST"
    schedule = client.put("/v1/schedules/abc")
    assert schedule.status_code == 405 and schedule.headers["allow"] == "DELETE, GET, PATCH"
    assert "allowed: DELETE, GET, PATCH" in schedule.json()["detail"]


def test_openapi_constraints_match_the_validation(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["ScheduleCreate"]["properties"]["cron"]["minLength"] == 6  # "" used to be schema-valid
    assert client.post("/v1/schedules", json={"cron": "", "spec": TINY}, headers=AUTH).status_code == 422
    assert client.post("/v1/schedules", json={"cron": "@daily", "spec": TINY}, headers=AUTH).status_code == 201
