"""Service test helpers: the root conftest's process helpers, the fake driver, a real uvicorn process on loopback."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from service.queue.runner import driver_alive

_spec = importlib.util.spec_from_file_location("_rdvae_root_conftest", Path(__file__).parents[1] / "conftest.py")
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
free_port = _root.free_port
wait_for_http = _root.wait_for_http
stop_process = _root.stop_process

FAKE_DRIVER = f"{sys.executable} {Path(__file__).parent / 'fake_driver.py'}"
TOKEN = "test-token-0123456789"
TOKEN_B = "second-token-9876543210"


def wait_until(predicate: Callable[[], object], timeout: float = 60.0, interval: float = 0.2) -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")


def reap_drivers(state_dir: Path) -> None:
    """Kill the process groups of sweep supervisors this test left behind (they run in their own sessions)."""
    for pid_file in (state_dir / "sweeps").glob("*/supervisor.pid"):
        if driver_alive(pid_file.parent):
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def real_stack_env(root: Path, mlflow_server: str, ray_cluster: str, **overrides: str) -> dict[str, str]:
    """The environment of an API process on the shared test Ray head and MLflow server, state and data under root."""
    return {
        **os.environ,
        "RDVAE_STATE_DIR": str(root / "state"),
        "RDVAE_DATA_ROOT": str(root),
        "RDVAE_API_TOKENS": TOKEN,
        "RDVAE_POLL_INTERVAL_S": "0.3",
        "RDVAE_RAY_ADDRESS": ray_cluster,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "OMP_NUM_THREADS": "1",
        **overrides,
    }


class ApiProcess:
    """`uvicorn service.api.app:app` on 127.0.0.1 in its own process group; the env carries its settings."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> ApiProcess:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "service.api.app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_http(f"{self.url}/healthz", timeout=timeout, process=self.process)
        return self

    def kill(self) -> None:
        """SIGKILL the API process only (sweep drivers live in their own sessions and survive)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)
