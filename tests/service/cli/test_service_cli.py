"""The `rdvae` CLI as a subprocess against a real API started with docker-compose.yml's api command, on loopback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from compose_commands import healthcheck_command, service_command, service_environment
from service_helpers import FAKE_DRIVER, TOKEN, free_port, reap_drivers, stop_process, wait_for_http, wait_until

BIN = Path(sys.executable).parent
TINY = {"name": "cli-tiny", "dataset": "digits", "n_trials": 3, "max_concurrent_trials": 1, "epochs": 1,
        "iwae_samples": 5, "sampler": "random"}  # fmt: skip
COMPOSE_ENV = {"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p", "POSTGRES_DB": "d", "RDVAE_API_TOKENS": TOKEN}
pytestmark = pytest.mark.slow


class Api:
    """`rdvae serve --external ...` exactly as the compose api service runs it, with its env localized."""

    def __init__(self, root: Path, ray_address: str, mlflow_uri: str) -> None:
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        replacements = {
            "postgresql+psycopg://u:p@postgres:5432/d": f"sqlite:///{root / 'service.db'}",
            "ray-head:6379": ray_address,
            "http://mlflow:5000": mlflow_uri,
            "/data": str(root / "state"),
            "0.0.0.0": "127.0.0.1",
            "8000": str(self.port),
        }
        self.command = service_command("api", COMPOSE_ENV, replacements)
        self.command[0] = str(BIN / self.command[0])
        self.health = healthcheck_command("api", COMPOSE_ENV, {"8000": str(self.port)})
        self.env = {**os.environ, **service_environment("api", COMPOSE_ENV, replacements),
                    "RDVAE_DATA_ROOT": str(root), "RDVAE_DRIVER_COMMAND": FAKE_DRIVER,
                    "RDVAE_POLL_INTERVAL_S": "0.2"}  # fmt: skip
        self.process: subprocess.Popen | None = None

    def start(self) -> Api:
        with (self.root / "api.log").open("a") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)  # fmt: skip
        wait_for_http(f"{self.url}/healthz", timeout=90, process=self.process)
        subprocess.run(self.health, check=True, timeout=30)  # the compose healthcheck, as Docker would run it
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str, mlflow_server: str) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("cli-api")
    api = Api(root, ray_cluster, mlflow_server).start()
    yield api
    api.stop()
    reap_drivers(root / "state")


def rdvae(*args: str, url: str, token: str | None = TOKEN, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("RDVAE_URL", "RDVAE_TOKEN")}
    env["RDVAE_URL"] = url
    if token is not None:
        env["RDVAE_TOKEN"] = token
    env["COLUMNS"] = "200"
    return subprocess.run([str(BIN / "rdvae"), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def spec_file(tmp_path: Path) -> Callable[..., Path]:
    def write(**changes: object) -> Path:
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump({**TINY, **changes}))
        return path

    return write


def test_submit_watch_pareto_list(api_server: Api, spec_file: Callable[..., Path], tmp_path: Path) -> None:
    submitted = rdvae("submit", str(spec_file()), url=api_server.url)
    assert submitted.returncode == 0, submitted.stderr
    sweep_id = submitted.stdout.strip()
    assert len(sweep_id) == 32 and "status" in submitted.stderr
    watched = rdvae("status", sweep_id, "--watch", "--interval", "0.2", url=api_server.url)
    assert watched.returncode == 0, watched.stderr
    assert "3/3" in watched.stderr and "best ELBO -98.00" in watched.stderr and "collapsed 0" in watched.stderr
    assert "succeeded" in watched.stdout
    plot = tmp_path / "rd.png"
    front = rdvae("pareto", sweep_id, "--plot", str(plot), url=api_server.url)
    assert front.returncode == 0, front.stderr
    assert "Pareto front" in front.stdout and "★" in front.stdout and "Recommended: trial 2" in front.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    listed = rdvae("list", url=api_server.url)
    assert listed.returncode == 0 and sweep_id in listed.stdout


def test_cancel_a_running_sweep(api_server: Api, spec_file: Callable[..., Path]) -> None:
    sweep_id = rdvae("submit", str(spec_file(n_trials=200)), url=api_server.url).stdout.strip()
    cancelled = rdvae("cancel", sweep_id, url=api_server.url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert sweep_id in cancelled.stdout
    final = rdvae("status", sweep_id, "--watch", "--interval", "0.2", url=api_server.url)
    assert final.returncode == 1 and "cancelled" in final.stdout and f"sweep {sweep_id} cancelled" in final.stderr


def test_clear_errors(api_server: Api, spec_file: Callable[..., Path], tmp_path: Path) -> None:
    down = rdvae("status", "abc", url=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 3 and "cannot reach the rdvae API" in down.stderr
    wrong = rdvae("submit", str(spec_file()), url=api_server.url, token="not-the-token")
    assert wrong.returncode == 4 and "refused the token (HTTP 401" in wrong.stderr
    missing = rdvae("submit", str(tmp_path / "nope.yaml"), url=api_server.url)
    assert missing.returncode == 2 and "nope.yaml not found" in missing.stderr
    invalid = rdvae("submit", str(spec_file(n_trials=0, search_space={"beta": {"low": -1, "high": 2}})),
                    url=api_server.url)  # fmt: skip
    assert invalid.returncode == 2 and "HTTP 422" in invalid.stderr
    assert "body.n_trials" in invalid.stderr and "body.search_space.beta.low" in invalid.stderr
    unknown = rdvae("pareto", "0" * 32, url=api_server.url)
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr


def test_train_forwards_to_the_trainer(tmp_path: Path) -> None:
    shown = subprocess.run([str(BIN / "rdvae"), "train", "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--dataset" in shown.stdout and "--objective" in shown.stdout
    bad = subprocess.run([str(BIN / "rdvae"), "train", "--objective", "nope"], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert bad.returncode == 2 and "--objective" in bad.stderr


def _fire_now(api: Api, schedule_id: str) -> None:
    """Move the schedule's next fire time into the past, as if its cron time had come (the loop polls every 5 s)."""
    with sqlite3.connect(api.root / "service.db") as db:
        db.execute("UPDATE schedules SET next_fire_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (schedule_id,))


def test_schedules_fire_once_and_survive_a_restart(api_server: Api, spec_file: Callable[..., Path]) -> None:
    url = api_server.url
    bad_cron = rdvae("schedule", "add", str(spec_file()), "--cron", "61 * * * *", url=url)
    assert bad_cron.returncode == 2 and "body.cron" in bad_cron.stderr
    bad_zone = rdvae("schedule", "add", str(spec_file()), "--cron", "0 3 * * *", "--timezone", "Mars/Base", url=url)
    assert bad_zone.returncode == 2 and "body.timezone" in bad_zone.stderr
    added = rdvae("schedule", "add", str(spec_file()), "--cron", "0 3 * * *", "--timezone", "Europe/Paris",
                  "--name", "nightly", "--warm-start", url=url)  # fmt: skip
    assert added.returncode == 0, added.stderr
    schedule_id = added.stdout.strip()
    assert "T03:00:00+01:00" in added.stderr, "next fire times are shown in the schedule's timezone"
    paused = rdvae("schedule", "pause", schedule_id, url=url)
    assert paused.returncode == 0 and "paused" in rdvae("schedule", "list", url=url).stdout
    assert rdvae("schedule", "resume", schedule_id, url=url).returncode == 0
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    _fire_now(api_server, schedule_id)
    fired = wait_until(lambda: client.get(f"/v1/schedules/{schedule_id}").json()["last_sweep_id"], timeout=30)
    sweep = client.get(f"/v1/sweeps/{fired}").json()
    assert sweep["origin"] == f"schedule:{schedule_id}" and sweep["name"] == "cli-tiny"
    api_server.stop()
    api_server.start()
    listed = rdvae("schedule", "list", url=url)
    assert listed.returncode == 0 and fired in listed.stdout
    view = client.get(f"/v1/schedules/{schedule_id}").json()
    assert view["fire_count"] == 1 and view["last_sweep_id"] == fired
    assert view["next_fire_times"][0].endswith("T03:00:00+01:00")
    origins = [item["origin"] for item in client.get("/v1/sweeps", params={"limit": 200}).json()["items"]]
    assert origins.count(f"schedule:{schedule_id}") == 1
    removed = rdvae("schedule", "rm", schedule_id, url=url)
    assert removed.returncode == 0 and client.get(f"/v1/schedules/{schedule_id}").status_code == 404


def test_schedule_update_and_validation_over_http(api_server: Api) -> None:
    client = httpx.Client(base_url=api_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    body = {"cron": "@daily", "timezone": "UTC", "spec": TINY}
    outside = client.post(
        "/v1/schedules", json={**body, "spec": {**TINY, "dataset": {"name": "file", "path": "../x.npy"}}}
    )
    assert outside.status_code == 422 and outside.json()["errors"][0]["field"] == "body.spec.dataset.path"
    created = client.post("/v1/schedules", json=body, params={"upcoming": 2})
    assert created.status_code == 201 and len(created.json()["next_fire_times"]) == 2
    schedule_id = created.json()["id"]
    assert all(t.endswith("T00:00:00Z") for t in created.json()["next_fire_times"])
    changed = client.patch(f"/v1/schedules/{schedule_id}", json={"cron": "15 6 * * *", "timezone": "Asia/Tokyo"})
    assert changed.status_code == 200
    assert changed.json()["next_fire_times"][0].endswith("T06:15:00+09:00")
    bad = client.patch(f"/v1/schedules/{schedule_id}", json={"cron": "15 25 * * *"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.cron"
    assert client.post("/v1/schedules/nope/pause").status_code == 404
    anonymous = httpx.post(f"{api_server.url}/v1/schedules", json=body, timeout=30)
    assert anonymous.status_code == 401
    assert client.delete(f"/v1/schedules/{schedule_id}").status_code == 204
