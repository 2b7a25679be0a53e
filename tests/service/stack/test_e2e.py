"""End to end over real HTTP: uvicorn + the real `workers` driver + a real MLflow server + a local Ray head.

One API process is shared by the tests of this module (in order: a sweep to success, a cancel, a SIGKILL restart).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from service_helpers import ApiProcess, real_stack_env, reap_drivers, wait_until

from service.queue import store
from service.queue.db import make_engine, make_session_factory, session_scope

pytestmark = pytest.mark.slow

FINISHED = ("succeeded", "failed", "cancelled")


def tiny(name: str, **overrides: object) -> dict:
    spec = {
        "name": name,
        "dataset": "digits",
        "n_trials": 2,
        "max_concurrent_trials": 2,
        "epochs": 1,
        "batch_size": 256,
        "model": {"latent_dim": 4, "hidden_dims": [32]},
        "search_space": {"objective": ["beta"], "beta": {"low": 0.1, "high": 10.0}},
        "iwae_samples": 4,
        "sampler": "random",
        "early_stopping": {"asha": False, "stop_collapsed": False},
        "mlflow": {"experiment_name": f"e2e-{name}", "log_models": False},
    }
    return {**spec, **overrides}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str, ray_cluster: str) -> Iterator[ApiProcess]:
    root = tmp_path_factory.mktemp("api")
    env = real_stack_env(root, mlflow_server, ray_cluster, RDVAE_MAX_RUNNING_SWEEPS="1")
    process = ApiProcess(env, root / "api.log").start()
    yield process
    process.stop()
    reap_drivers(root / "state")


def _poll(client: httpx.Client, sweep_id: str, until: tuple[str, ...], timeout: float = 150.0) -> dict:
    def seen() -> dict | None:
        body = client.get(f"/v1/sweeps/{sweep_id}").json()
        return body if body["status"] in until else None

    return wait_until(seen, timeout=timeout, interval=0.5)


def test_a_tiny_sweep_runs_to_success(api: ApiProcess, mlflow_server: str) -> None:
    with api.client() as client:
        assert client.get("/readyz").json()["status"] == "ok"
        accepted = client.post("/v1/sweeps", json=tiny("ok"))
        assert accepted.status_code == 202, accepted.text
        sweep_id = accepted.json()["id"]
        done = _poll(client, sweep_id, FINISHED)
        assert done["status"] == "succeeded", done["error"]
        assert done["progress"]["total"] == 2 and done["progress"]["done"] == 2
        assert done["best_elbo"] is not None and done["timing"]["run_seconds"] > 0
        assert done["mlflow_parent_run_url"].startswith(f"{mlflow_server}/#/experiments/")
        trials = client.get(f"/v1/sweeps/{sweep_id}/trials").json()["trials"]
        assert len(trials) == 2 and all("elbo" in t["metrics"] for t in trials if t["status"] != "failed")
        pareto = client.get(f"/v1/sweeps/{sweep_id}/pareto").json()
        assert pareto["reason"] and pareto["max_elbo"] is not None
        assert isinstance(pareto["max_elbo_collapsed"], bool)
        # How sure: the max-IWAE trial, the censoring and the rule used, as in result.json.
        assert pareto["max_iwae"] is not None and pareto["collapse_rate_threshold"] == 0.1
        assert pareto["censored_trials"] == [] and isinstance(pareto["rd_frontier"], list)
        plot = client.get(f"/v1/sweeps/{sweep_id}/plot.png")
        assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG\r\n\x1a\n")
        assert client.post(f"/v1/sweeps/{sweep_id}/cancel").status_code == 409
        metrics = client.get("/metrics").text
        assert 'rdvae_sweeps{status="succeeded"} 1.0' in metrics


def test_cancel_stops_a_running_sweep(api: ApiProcess) -> None:
    with api.client() as client:
        # mnist5k trials of 200 epochs last tens of seconds: the cancel surely lands while one runs.
        spec = tiny("cancel", dataset="mnist5k", n_trials=4, epochs=200, max_concurrent_trials=1)
        sweep_id = client.post("/v1/sweeps", json=spec).json()["id"]
        _poll(client, sweep_id, ("running", *FINISHED))
        wait_until(lambda: client.get(f"/v1/sweeps/{sweep_id}").json()["progress"]["running"] >= 1, timeout=120)
        answer = client.post(f"/v1/sweeps/{sweep_id}/cancel")
        assert answer.status_code == 202 and answer.json()["cancel_requested"]
        done = _poll(client, sweep_id, FINISHED, timeout=90)
        assert done["status"] == "cancelled", done["error"]
        assert done["progress"]["completed"] < 4 and done["progress"]["running"] == 0
        assert client.post(f"/v1/sweeps/{sweep_id}/cancel").status_code == 409


def test_sigkill_of_the_api_loses_nothing_and_runs_nothing_twice(api: ApiProcess, mlflow_server: str) -> None:
    with api.client() as client:
        spec = tiny("restart", n_trials=3, max_concurrent_trials=1, epochs=2)
        sweep_id = client.post("/v1/sweeps", json=spec).json()["id"]
        # the driver is up once it has reported its MLflow parent run
        wait_until(lambda: client.get(f"/v1/sweeps/{sweep_id}").json()["mlflow_parent_run_id"], timeout=150)
    api.kill()  # 1: the API dies, its driver survives -> the new API re-attaches to it
    api.start()
    with api.client() as client:
        first = wait_until(lambda: _progressed(client, sweep_id), timeout=150)
        assert first["status"] == "running" and first["driver_launches"] == 1
    api.kill()  # 2: the API and the driver die (a machine crash) -> the driver is resumed, once
    supervisor = int((Path(api.env["RDVAE_STATE_DIR"]) / "sweeps" / sweep_id / "supervisor.pid").read_text())
    os.killpg(supervisor, signal.SIGKILL)
    api.start()
    with api.client() as client:
        done = _poll(client, sweep_id, FINISHED)
        assert done["status"] == "succeeded", done["error"]
        assert done["driver_launches"] == 2 and done["progress"]["done"] == 3
        trials = client.get(f"/v1/sweeps/{sweep_id}/trials").json()["trials"]
        assert len(trials) == 3 and len({t["trial_id"] for t in trials}) == 3
        assert sorted(t["number"] for t in trials) == [0, 1, 2]
        listed = client.get("/v1/sweeps", params={"limit": 200}).json()["items"]
        assert [item["id"] for item in listed if item["name"] == "restart"] == [sweep_id]
    engine = make_engine(f"sqlite:///{Path(api.env['RDVAE_STATE_DIR']) / 'service.db'}")
    with session_scope(make_session_factory(engine)) as session:
        rows, _total = store.list_sweeps(session, None, 200, 0)
        assert [row.id for row in rows if row.spec.name == "restart"] == [sweep_id]
    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("e2e-restart")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [
        r for r in runs if r.data.tags.get("rdvae.sweep_id") == sweep_id and "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    per_trial = Counter(r.data.tags["rdvae.trial_id"] for r in children)
    assert max(per_trial.values()) == 1  # no trial is logged twice
    finished = {r.data.tags["rdvae.trial_id"] for r in children if r.info.status == "FINISHED"}
    assert finished == {t["trial_id"] for t in trials}
    # A trial cut off by the driver's death may be replaced by a fresh one on resume (Tune's snapshot predates
    # it); its run is never FINISHED, and the finished sweep closes it as KILLED: no phantom live run remains.
    leftovers = [r for r in children if r.info.status != "FINISHED"]
    assert all(r.info.status == "KILLED" and "rdvae.orphaned" in r.data.tags for r in leftovers)


def _progressed(client: httpx.Client, sweep_id: str) -> dict | None:
    body = client.get(f"/v1/sweeps/{sweep_id}").json()
    return body if body["progress"]["done"] >= 1 or body["status"] in FINISHED else None
