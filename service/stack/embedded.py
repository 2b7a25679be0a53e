"""The embedded stack on loopback: a local `mlflow server` (SQLite store, UI) and a local Ray head, as children.

`rdvae serve` and the demo start it before the API and stop it after; every child runs in its own process group
so a stop takes down exactly what was started here and nothing else (never `ray stop`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"
# Ray otherwise swaps 127.0.0.1 for the interface address; its single-host mode keeps every socket on loopback.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def executable(name: str) -> str:
    """A console script of this environment (next to the interpreter), else from PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"`{name}` is not installed in this environment")
    return found


def stop_group(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the child's process group, SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        process.wait(timeout=timeout)


@dataclass
class EmbeddedStack:
    """Children started for one `rdvae serve`; `env` is what the API process needs to use them."""

    state_dir: Path
    mlflow_uri: str = ""
    ray_address: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)
    ray_temp_dir: Path | None = None
    _ray_env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            **RAY_LOOPBACK_ENV,
            "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            "RDVAE_RAY_ADDRESS": self.ray_address,
            "RDVAE_STATE_DIR": str(self.state_dir),
        }

    def start(self, mlflow_port: int = 5000, ray_port: int = 0, num_cpus: int | None = None) -> EmbeddedStack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:  # both start at once and are then awaited: start-up is dominated by their imports
            mlflow = self._start_mlflow(mlflow_port or free_port())
            ray = self._start_ray(ray_port or free_port(), num_cpus)
            wait_ready(
                lambda: http_ok(f"{self.mlflow_uri}/health"), mlflow, "mlflow server", log=self.state_dir / "mlflow.log"
            )
            wait_ready(
                lambda: ray_ready(self.ray_address, self._ray_env), ray, "ray head", log=self.state_dir / "ray.log"
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _log(self, name: str):  # noqa: ANN202 - a text file handed to Popen
        return (self.state_dir / f"{name}.log").open("a")

    def _spawn(self, command: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with self._log(name) as log:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def _start_mlflow(self, port: int) -> subprocess.Popen:
        store = (self.state_dir / "mlflow").resolve()
        store.mkdir(parents=True, exist_ok=True)
        command = [
            executable("mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination", str(store / "artifacts"),
            "--host", LOOPBACK, "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        process = self._spawn(command, "mlflow")
        self.mlflow_uri = f"http://{LOOPBACK}:{port}"
        return process

    def _start_ray(self, port: int, num_cpus: int | None) -> subprocess.Popen:
        # Ray's socket paths must stay short, so its temp dir lives in /tmp, keyed by port.
        self.ray_temp_dir = Path("/tmp") / f"rdvae-serve-{port}"
        command = [
            executable("ray"), "start", "--head", "--block",
            "--node-ip-address", LOOPBACK, "--port", str(port),
            "--include-dashboard", "false", "--temp-dir", str(self.ray_temp_dir), "--disable-usage-stats",
        ]  # fmt: skip
        if num_cpus is not None:
            command += ["--num-cpus", str(num_cpus)]
        # Nothing of ours needs draining at shutdown; Ray's default grace of 30 s would only delay the stop.
        env = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "3", **os.environ, **self.env}
        env.pop("RAY_ADDRESS", None)
        process = self._spawn(command, "ray", env)
        self._ray_env = env  # `ray status` must run with the head's environment (auth mode, loopback)
        self.ray_address = f"{LOOPBACK}:{port}"
        return process

    def stop(self) -> None:
        """SIGTERM every child group at once (newest first), then wait for each, SIGKILL what lingers."""
        for process in reversed(self.processes):
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            stop_group(process)
        self.processes.clear()
        if self.ray_temp_dir is not None:
            shutil.rmtree(self.ray_temp_dir, ignore_errors=True)


def http_ok(url: str) -> bool:
    """`url` answers 2xx now."""
    try:
        return httpx.get(url, timeout=2.0).is_success
    except httpx.HTTPError:
        return False


def ray_ready(address: str, env: dict[str, str]) -> bool:
    """The Ray head at `address` accepts connections and `ray status` (run with `env`) lists its CPUs."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            pass
    except OSError:
        return False
    status = subprocess.run(
        [executable("ray"), "status", "--address", address], env=env, capture_output=True, text=True, timeout=60
    )
    return status.returncode == 0 and "CPU" in status.stdout


def wait_ready(
    ready: Callable[[], bool],
    process: subprocess.Popen | None,
    what: str,
    timeout: float = 180.0,
    log: Path | None = None,
) -> None:
    """Poll `ready()` until it is true; fail early if `process` exits, or after `timeout` seconds."""
    where = f"; see {log}" if log is not None else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}{where}")
        if ready():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s{where}")
