"""Shared fixtures: real components on loopback — a Ray head started with `ray start`, an `mlflow server` process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The service's own helpers: a free loopback port, and SIGTERM-then-SIGKILL of a child's process group only
from service.stack.embedded import free_port, http_ok, ray_ready, stop_group, wait_ready

stop_process = stop_group  # the name the test modules import

BIN = Path(sys.executable).parent

# Ray replaces 127.0.0.1 by the host's interface address unless clusters are "disabled" (its loopback-only
# mode for laptops); tests must only touch loopback, so every Ray process here runs in that mode.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# Ray 2.60 turns token auth on for `ray start` as soon as ~/.ray/auth_token exists (any local ray.init() writes
# it), while `ray status` without RAY_AUTH_MODE assumes "disabled" and is refused; the loopback-only test
# cluster needs no token, so every Ray process and client here agrees on "disabled".
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def wait_for_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 2xx, the process dies, or `timeout` seconds pass."""
    wait_ready(lambda: http_ok(url), process, url, timeout)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with a SQLite backend and a temporary artifact root; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("w")  # noqa: SIM115 - open for the server's whole life
    process = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", timeout=120.0, process=process)
        yield uri
    finally:
        stop_process(process)
        log.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A real Ray head (`ray start --head --block`) on loopback in its own process group; yields host:port.

    `ray stop` would kill every Ray process on the machine, so teardown kills only this head's group.
    """
    port = free_port()
    temp_dir = Path("/tmp") / f"rdvae-ray-{os.getpid()}"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    command = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--num-cpus",
        "4",
        "--num-gpus",
        "0",
        "--include-dashboard",
        "false",
        "--temp-dir",
        str(temp_dir),
        "--disable-usage-stats",
    ]
    address = f"127.0.0.1:{port}"
    with Path(str(temp_dir) + ".log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_for_ray(address, process)
            yield address
        finally:
            stop_process(process, timeout=5.0)  # a Ray head lingers ~20 s on SIGTERM; its temp dir goes anyway
            shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_ray(address: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    wait_ready(lambda: ray_ready(address, dict(os.environ)), process, f"Ray head at {address}", timeout)
