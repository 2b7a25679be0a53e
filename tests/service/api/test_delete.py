"""DELETE /v1/sweeps/{id} and `rdvae rm` over real HTTP: a finished sweep's record, state and Ray checkpoints go."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from service_helpers import FAKE_DRIVER, TOKEN, TOKEN_B, ApiProcess, wait_until

pytestmark = pytest.mark.slow
RDVAE = str(Path(sys.executable).parent / "rdvae")


def test_a_finished_sweep_is_deleted_with_its_state(api_process: Callable[..., ApiProcess], tmp_path: Path) -> None:
    api = api_process(RDVAE_DRIVER_COMMAND=FAKE_DRIVER, FAKE_TRIAL_SECONDS="0.1").start()
    owner, other = api.client(TOKEN), api.client(TOKEN_B)
    spec = {"dataset": "digits", "n_trials": 2, "epochs": 1}
    sweep_id = owner.post("/v1/sweeps", json=spec).json()["id"]
    wait_until(lambda: owner.get(f"/v1/sweeps/{sweep_id}").json()["status"] == "succeeded", timeout=30)
    folders = [tmp_path / "state" / "sweeps" / sweep_id, tmp_path / "state" / "ray" / sweep_id]
    assert all(folder.is_dir() for folder in folders)
    assert other.delete(f"/v1/sweeps/{sweep_id}").status_code == 404  # not the owner's
    running_id = owner.post("/v1/sweeps", json={**spec, "n_trials": 50}).json()["id"]
    wait_until(lambda: owner.get(f"/v1/sweeps/{running_id}").json()["status"] == "running", timeout=30)
    busy = owner.delete(f"/v1/sweeps/{running_id}")
    assert busy.status_code == 409 and "cancel it" in busy.json()["detail"]

    env = {**os.environ, "RDVAE_URL": api.url, "RDVAE_TOKEN": TOKEN}
    removed = subprocess.run([RDVAE, "rm", sweep_id[:8]], env=env, capture_output=True, text=True, timeout=60)
    assert removed.returncode == 0 and f"sweep {sweep_id} deleted" in removed.stdout, removed.stderr
    assert not any(folder.exists() for folder in folders)
    assert owner.get(f"/v1/sweeps/{sweep_id}").status_code == 404
    assert owner.post(f"/v1/sweeps/{running_id}/cancel").status_code == 202
