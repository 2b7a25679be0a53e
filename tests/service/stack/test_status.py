"""Honest status on the real stack (uvicorn, the real driver on a local Ray, the `rdvae` CLI piped): trials while a
sweep runs, a sweep without a successful trial fails and `--watch` exits ≠ 0, full ids when piped, id prefixes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from service_helpers import TOKEN, ApiProcess, wait_until

from service.cli.render import phase

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def rdvae(*args: str, url: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The CLI with its output piped (no terminal, no COLUMNS): what a script or `| grep` sees."""
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES", "RDVAE_URL")}
    env.update(RDVAE_URL=url, RDVAE_TOKEN=TOKEN)
    return subprocess.run([str(BIN / "rdvae"), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def real_api(api_process: Callable[..., ApiProcess], ray_cluster: str, mlflow_server: str) -> ApiProcess:
    """The API with the real driver, on the shared test Ray head and MLflow server."""
    return api_process(RDVAE_RAY_ADDRESS=ray_cluster, MLFLOW_TRACKING_URI=mlflow_server).start()


def test_trials_are_visible_while_the_sweep_runs(real_api: ApiProcess, tmp_path: Path) -> None:
    api = real_api
    client = api.client()
    spec = {
        "dataset": "digits",
        "n_trials": 40,
        "max_concurrent_trials": 1,
        "epochs": 2,
        "iwae_samples": 2,
        "model": {"latent_dim": 2, "hidden_dims": [8]},
        "sampler": "random",
    }
    sweep_id = client.post("/v1/sweeps", json=spec).json()["id"]

    def a_trial_ended() -> dict | None:
        view = client.get(f"/v1/sweeps/{sweep_id}/trials").json()
        return view if any(trial["status"] != "running" for trial in view["trials"]) else None

    view = wait_until(a_trial_ended, timeout=120)
    assert view["status"] == "running"  # they used to appear only once the sweep had finished
    ended = next(trial for trial in view["trials"] if trial["status"] != "running")
    assert ended["number"] == 0 and "elbo" in ended["metrics"] and "beta" in ended["params"]
    listed = rdvae("trials", sweep_id[:7], url=api.url)  # a prefix, as `rdvae list` users copy it
    assert listed.returncode == 0, listed.stderr
    assert f"Trials of sweep {sweep_id} (running)" in listed.stdout and ended["status"] in listed.stdout
    unknown = rdvae("trials", "ffffffffff", url=api.url)
    assert unknown.returncode == 1 and "no sweep id starts with 'ffffffffff'" in unknown.stderr
    full = rdvae("list", url=api.url)
    assert sweep_id in full.stdout  # piped output is not cut at 80 columns
    assert rdvae("cancel", sweep_id[:8], url=api.url).returncode == 0


def test_a_sweep_with_no_successful_trial_fails_and_watch_exits_nonzero(real_api: ApiProcess, tmp_path: Path) -> None:
    api = real_api
    np.save(tmp_path / "flat.npy", np.random.default_rng(0).random((200, 10), dtype=np.float32))
    # Valid at submit (real values, Gaussian), but a decoder std of 1e-30 has variance 0 in float32: the first loss
    # is infinite and every trial fails with TrainingDivergedError (no test hook).
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "dataset: {name: file, path: flat.npy}\nmodel: {likelihood: gaussian, gaussian_std: 1.0e-30}\n"
        "n_trials: 2\nepochs: 1\nmax_failures: 0\nsampler: random\n"
    )
    watched = rdvae("submit", str(spec), "--watch", url=api.url, timeout=180)
    assert watched.returncode == 1, watched.stdout + watched.stderr  # it used to be `succeeded`, exit 0
    assert "failed" in watched.stdout
    error = api.client().get(f"/v1/sweeps/{watched.stdout.split()[0]}").json()["error"]
    assert error.startswith("no trial succeeded: 2 failed; most common error (2x): ")
    assert "TrainingDivergedError: non-finite training loss at epoch 1" in error
    assert "\n" not in error


def test_the_watch_bar_names_the_phase() -> None:
    def sweep(status: str, done: int, running: int, position: int | None = None) -> dict:
        progress = {"total": 4, "done": done, "completed": done, "failed": 0, "running": running, "collapsed": 0}
        return {"status": status, "progress": progress, "queue_position": position}

    assert phase(sweep("queued", 0, 0, position=3)) == "queued (position 3)"
    assert phase(sweep("running", 0, 0)).startswith("starting")
    assert phase(sweep("running", 1, 1)) == "trial 2 running"
    assert phase(sweep("running", 1, 2)) == "trials 2-3 running"
    assert phase(sweep("running", 4, 0)).startswith("finishing")
    assert phase(sweep("failed", 0, 0)) == "failed"
