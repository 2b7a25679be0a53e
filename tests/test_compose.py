"""docker-compose.yml and the Dockerfile, checked structurally; every command they run is run here on loopback."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from compose_commands import (
    ROOT,
    env_example,
    healthcheck_command,
    load_compose,
    referenced_variables,
    root_conftest,
    service_command,
)

BIN = Path(sys.executable).parent
free_port, stop_process, wait_for_http = (root_conftest.free_port, root_conftest.stop_process,
                                          root_conftest.wait_for_http)  # fmt: skip
SERVICES = {"postgres", "mlflow", "ray-head", "ray-worker", "api"}
SHARED_IMAGE = ("mlflow", "ray-head", "ray-worker", "api")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.IGNORECASE)
# Where each compose command (and its healthcheck) is run outside Docker, with the same entry point and env names.
EXERCISED_BY = {
    "mlflow": "tests/test_compose.py::test_mlflow_and_ray_commands_run_on_loopback",
    "ray-head": "tests/test_compose.py::test_mlflow_and_ray_commands_run_on_loopback",
    "ray-worker": "tests/test_compose.py::test_mlflow_and_ray_commands_run_on_loopback",
    "api": "tests/service/cli/test_service_cli.py::api_server (fixture: the api command and environment, localized)",
}
# The stock postgres image runs its own entrypoint; only its healthcheck (pg_isready) is Docker-only.
NOT_EXERCISED = {"postgres": "stock postgres:17 image; the suite uses SQLite for the service DB"}
TEST_ENV = {**env_example(), "POSTGRES_PASSWORD": "pw", "RDVAE_API_TOKENS": "token"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


def test_services_have_healthchecks_and_restart_policies(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        assert service.get("restart") in ("always", "unless-stopped", "on-failure"), name
        assert service["healthcheck"]["test"], name
        assert "container_name" not in service, f"{name}: a fixed container name blocks --scale"


def test_ray_worker_reserves_a_gpu_and_scales(compose: dict) -> None:
    worker = compose["services"]["ray-worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device["capabilities"] and device["driver"] == "nvidia" for device in devices)
    assert "ports" not in worker, "published ports collide when scaled with --scale ray-worker=N"
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_same_image_everywhere_and_dockerfile_args(compose: dict) -> None:
    images = {compose["services"][name]["image"] for name in SHARED_IMAGE}
    assert len(images) == 1, f"api, mlflow and Ray nodes must share one image (pickled trials): {images}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "ARG TORCH_VERSION=2.13.0" in dockerfile and "whl/cpu" in dockerfile
    for name in SHARED_IMAGE:
        for arg in compose["services"][name]["build"].get("args", {}):
            assert f"ARG {arg}" in dockerfile, f"{name}: build arg {arg} unknown to the Dockerfile"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env"} <= set(ignored)


def test_commands_are_the_project_entry_points(compose: dict) -> None:
    services = compose["services"]
    assert services["api"]["command"][:2] == ["rdvae", "serve"]
    assert services["mlflow"]["command"][:3] == ["mlflow", "server", "--backend-store-uri"]
    assert services["mlflow"]["command"][3].startswith("postgresql+psycopg://")
    assert services["ray-head"]["command"][:4] == ["ray", "start", "--head", "--block"]
    worker = services["ray-worker"]["command"]
    assert worker[:2] == ["ray", "start"] and "--block" in worker and "--address" in worker
    api_env = services["api"]["environment"]
    for name in ("RDVAE_DATABASE_URL", "RDVAE_RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RDVAE_API_TOKENS"):
        assert name in api_env, name


def test_no_literal_secrets_and_every_variable_documented(compose: dict) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    example = env_example()
    missing = referenced_variables(text) - set(example)
    assert not missing, f"variables used by docker-compose.yml but absent from .env.example: {sorted(missing)}"
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert str(value).startswith("${"), f"{name}.{key} must come from the env file"
    for credentials in re.findall(r"://([^@/\s]+)@", text):
        literal = re.sub(r"\$\{[^}]*\}", "", credentials)
        assert literal in ("", ":"), f"literal credentials in URL: {credentials}"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value == "", f".env.example must leave {key} empty"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_every_command_is_exercised_outside_docker(compose: dict) -> None:
    assert set(EXERCISED_BY) | set(NOT_EXERCISED) == set(compose["services"])
    for name in NOT_EXERCISED:
        assert "command" not in compose["services"][name], f"{name} runs a command: exercise it"
    for where in EXERCISED_BY.values():
        path, _, test = where.partition("::")
        assert f"def {test.split(' ')[0]}(" in (ROOT / path).read_text(), where


@pytest.mark.slow
def test_mlflow_and_ray_commands_run_on_loopback(tmp_path: Path) -> None:
    """mlflow, ray-head and ray-worker commands and their healthchecks, localized; both servers start at once."""
    mlflow_port, ray_port = str(free_port()), str(free_port())
    address = f"127.0.0.1:{ray_port}"
    mlflow = service_command("mlflow", TEST_ENV, {
        f"postgresql+psycopg://rdvae:pw@postgres:5432/{TEST_ENV['MLFLOW_DB']}": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "/mlartifacts": str(tmp_path / "artifacts"),
        "0.0.0.0": "127.0.0.1",
        "5000": mlflow_port,
    })  # fmt: skip
    # Loopback-only extras: a private temp dir and a small CPU count on the shared test machine.
    extras = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--temp-dir", f"/tmp/rdvae-compose-{ray_port}"]
    head = [*service_command("ray-head", TEST_ENV, {"6379": ray_port}), *extras]
    worker = [*service_command("ray-worker", TEST_ENV, {"ray-head:6379": address}), *extras[:2]]
    for command in (mlflow, head, worker):
        command[0] = str(BIN / command[0])
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    processes: list[subprocess.Popen] = []
    try:
        with (tmp_path / "servers.log").open("w") as log:
            for command in (mlflow, head):
                processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                  start_new_session=True))  # fmt: skip
        wait_for_http(f"http://127.0.0.1:{mlflow_port}/health", timeout=180, process=processes[0])
        subprocess.run(healthcheck_command("mlflow", TEST_ENV, {"5000": mlflow_port}), check=True, timeout=30)
        root_conftest._wait_for_ray(address, processes[1], timeout=180.0)
        head_probe = healthcheck_command("ray-head", TEST_ENV, {"127.0.0.1:6379": address})
        subprocess.run([str(BIN / "ray"), *head_probe[1:]], check=True, capture_output=True, timeout=60)
        # A real join cannot stay on loopback: in cluster mode Ray rewrites 127.0.0.1 to the interface address.
        # So the worker's exact command runs in loopback mode, where Ray parses every flag and then refuses the
        # join at its multi-node check, the last step before it would connect.
        joined = subprocess.run(worker, env=env, capture_output=True, text=True, timeout=120)
        assert joined.returncode != 0 and "Multi-node Ray clusters" in joined.stdout + joined.stderr, joined.stderr
        worker_probe = healthcheck_command("ray-worker", TEST_ENV, {"ray-head:6379": address})
        subprocess.run([str(BIN / "ray"), *worker_probe[1:]], check=True, capture_output=True, timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            stop_process(process)
        shutil.rmtree(extras[-1], ignore_errors=True)
