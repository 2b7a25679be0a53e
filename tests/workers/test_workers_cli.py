"""The driver process (`python -m workers run`): resume after a killed driver, SIGTERM, invalid specs, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from workers import SweepSpec, run_sweep

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def spec_dict(name: str, **overrides: object) -> dict:
    return {
        "name": name,
        "dataset": "digits",
        "model": {"latent_dim": 4, "hidden_dims": [16]},
        "search_space": {"beta": {"low": 0.1, "high": 3.0}},
        "n_trials": 6,
        "max_concurrent_trials": 2,
        "epochs": 3,
        "iwae_samples": 2,
        "sampler": "random",
        "early_stopping": {"asha": False, "stop_collapsed": False},
        "mlflow": {"experiment_name": name, "log_models": False},
        **overrides,
    }


def start_driver(tmp_path: Path, spec: dict, ray_cluster: str, mlflow_server: str) -> subprocess.Popen:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    command = [
        sys.executable, "-m", "workers", "run", "--spec", str(spec_path), "--sweep-id", spec["name"],
        "--storage-root", str(tmp_path / "sweeps"), "--ray-address", ray_cluster, "--tracking-uri", mlflow_server,
        "--progress-file", str(tmp_path / "progress.jsonl"), "--result-file", str(tmp_path / "result.json"),
    ]  # fmt: skip
    log = (tmp_path / "driver.log").open("a")  # noqa: SIM115 - the driver writes to it for its whole life
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def progress_lines(tmp_path: Path) -> list[dict]:
    path = tmp_path / "progress.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def wait_for(predicate, process: subprocess.Popen, timeout: float = 150.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert process.poll() is None, f"driver exited early with {process.returncode}"
        time.sleep(0.2)
    raise TimeoutError("condition not reached")


def test_killed_driver_resumes_without_rerunning_finished_trials(
    tmp_path: Path, ray_cluster: str, mlflow_server: str
) -> None:
    spec = spec_dict("resume", epochs=15)  # ~1-2 s per trial: the kill lands mid-sweep
    driver = start_driver(tmp_path, spec, ray_cluster, mlflow_server)
    try:
        wait_for(lambda: len((progress_lines(tmp_path) or [{}])[-1].get("finished", [])) >= 2, driver)
        finished_before = set(progress_lines(tmp_path)[-1]["finished"])
        time.sleep(1.0)  # let Tune write the experiment state that records these trials as finished
        assert driver.poll() is None, "the sweep finished before it could be interrupted"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert len(finished_before) < spec["n_trials"]
    resumed = start_driver(tmp_path, spec, ray_cluster, mlflow_server)
    assert resumed.wait(timeout=240) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    ids = [trial["trial_id"] for trial in result["trials"]]
    assert len(ids) == len(set(ids)) == spec["n_trials"]
    statuses = {trial["trial_id"]: (trial["status"], trial["error"], trial["epochs"]) for trial in result["trials"]}
    assert all(status == "completed" for status, _, _ in statuses.values()), statuses
    starts = tmp_path / "sweeps" / "resume" / "starts"
    for trial_id in finished_before:
        assert len((starts / f"{trial_id}.jsonl").read_text().splitlines()) == 1, f"{trial_id} ran twice"
    client = MlflowClient(mlflow_server)
    children = client.search_runs(
        [result["mlflow_experiment_id"]],
        filter_string=f"tags.`mlflow.parentRunId` = '{result['mlflow_parent_run_id']}'",
    )
    assert len(children) == spec["n_trials"], "a child run was duplicated or lost on resume"

    # Damaged state (a truncated search state): the driver refuses by name instead of quietly starting over.
    search_state = max((tmp_path / "sweeps" / "resume").glob("search_gen_state-*.json"))
    search_state.write_bytes(search_state.read_bytes()[:20])
    refused = start_driver(tmp_path, spec, ray_cluster, mlflow_server)
    assert refused.wait(timeout=120) == 1
    assert f"sweep state file {search_state} is unreadable" in (tmp_path / "driver.log").read_text()


def test_sigterm_cancels_gracefully_with_exit_3(tmp_path: Path, ray_cluster: str, mlflow_server: str) -> None:
    spec = spec_dict("cancel", n_trials=4, epochs=50)
    driver = start_driver(tmp_path, spec, ray_cluster, mlflow_server)
    try:
        wait_for(lambda: any(line["running"] >= 1 for line in progress_lines(tmp_path)), driver)
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 3, (tmp_path / "driver.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["cancelled"] is True
    assert len([t for t in result["trials"] if t["status"] == "completed"]) < spec["n_trials"]


def test_invalid_spec_exits_2_naming_the_field(tmp_path: Path) -> None:
    spec_path = tmp_path / "bad.yaml"
    spec_path.write_text("dataset: digits\nsearch_space:\n  beta: {low: -1, high: 2}\n")
    command = [sys.executable, "-m", "workers", "run", "--spec", str(spec_path), "--sweep-id", "bad"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ})
    assert done.returncode == 2
    assert "search_space.beta.low" in done.stderr


def test_diverging_trials_are_retried_then_reported_failed(
    tmp_path: Path, ray_cluster: str, mlflow_server: str
) -> None:
    # A real failure, no test hook: a fixed-variance Gaussian decoder with std 1e-30 has variance 1e-60,
    # which underflows to 0 in float32, so the first loss is infinite and rdvae raises TrainingDivergedError.
    spec = SweepSpec.model_validate(
        spec_dict(
            "failing",
            n_trials=1,
            epochs=1,
            max_failures=1,
            model={"latent_dim": 4, "hidden_dims": [16], "likelihood": "gaussian", "gaussian_std": 1e-30},
        )
    )
    result = run_sweep(
        spec, sweep_id="failing", storage_root=tmp_path, ray_address=ray_cluster, tracking_uri=mlflow_server
    )
    assert [t.status for t in result.trials] == ["failed"]
    for trial in result.trials:
        assert trial.attempts == 2  # the first run and one retry
        assert trial.error is not None and "TrainingDivergedError" in trial.error
    assert result.selection.recommended is None and "no recommendation" in result.selection.reason
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.trials[0].mlflow_run_id)
    assert run.info.status == "FAILED" and "TrainingDivergedError" in run.data.tags["rdvae.error"]
    assert run.data.tags["rdvae.attempts"] == "2"
    # The sweep itself completes and says a trial failed.
    assert not result.cancelled
    parent = client.get_run(result.mlflow_parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["n_failed"] == 1.0 and parent.data.metrics["n_completed"] == 0.0
    assert "no recommendation" in parent.data.tags["rdvae.reason"]
