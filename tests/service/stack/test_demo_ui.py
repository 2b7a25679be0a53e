"""The embedded stack (`rdvae serve`) as the demo runs it: its MLflow UI, in headless Chromium, lists the sweep's
parent run and the parent run's nested trial runs. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from service_helpers import TOKEN, free_port, reap_drivers, stop_process, wait_for_http

BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
TINY = {"name": "ui-tiny", "dataset": "digits", "n_trials": 2, "max_concurrent_trials": 2, "epochs": 1,
        "model": {"latent_dim": 4, "hidden_dims": [32]}, "iwae_samples": 5, "sampler": "random",
        "mlflow": {"experiment_name": "ui-tiny", "log_models": False}}  # fmt: skip

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install -y chromium)"),
]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`rdvae serve` in embedded mode: its own MLflow server (UI) and Ray head on loopback, then the API."""
    root = tmp_path_factory.mktemp("embedded")
    api_port, mlflow_port = free_port(), free_port()
    env = {**os.environ, "RDVAE_API_TOKENS": TOKEN, "RDVAE_DATA_ROOT": str(root)}
    for name in ("RDVAE_RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "RDVAE_DATABASE_URL"):
        env.pop(name, None)
    command = [str(BIN / "rdvae"), "serve", "--port", str(api_port), "--mlflow-port", str(mlflow_port),
               "--state-dir", str(root / "state"), "--num-cpus", "2", "--log-level", "warning"]  # fmt: skip
    with (root / "serve.log").open("w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{api_port}/healthz", timeout=240, process=process)
        yield {"api": f"http://127.0.0.1:{api_port}", "mlflow": f"http://127.0.0.1:{mlflow_port}", "root": str(root)}
    finally:
        stop_process(process, timeout=60)  # SIGTERM: serve stops uvicorn, then its MLflow and Ray children
        reap_drivers(root / "state")
    assert not _listening(mlflow_port), "rdvae serve left its MLflow server running"


def _listening(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def _chromium(url: str, profile: Path, screenshot: Path) -> str:
    """The DOM after the JS app has rendered (virtual time), and a screenshot of the page."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--window-size=1600,1000"]  # fmt: skip
    subprocess.run([str(CHROMIUM), *flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120)
    dom = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom.stdout, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())


def test_mlflow_ui_lists_parent_and_nested_trial_runs(embedded: dict[str, str], tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "RDVAE_URL": embedded["api"], "RDVAE_TOKEN": TOKEN}
    submitted = subprocess.run([str(BIN / "rdvae"), "submit", str(spec), "--watch"], env=env, capture_output=True,
                               text=True, timeout=400)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr + Path(embedded["root"], "serve.log").read_text()[-3000:]
    sweep_id = submitted.stdout.splitlines()[0].strip()
    sweep = httpx.get(f"{embedded['api']}/v1/sweeps/{sweep_id}", timeout=30).json()
    experiment, parent = sweep["mlflow_experiment_id"], sweep["mlflow_parent_run_id"]
    search = httpx.post(
        f"{embedded['mlflow']}/api/2.0/mlflow/runs/search",
        timeout=30,
        json={"experiment_ids": [experiment], "filter": f"tags.mlflow.parentRunId = '{parent}'"},
    )
    children = [run["info"]["run_name"] for run in search.json()["runs"]]
    assert len(children) == TINY["n_trials"]

    runs_page = _chromium(f"{embedded['mlflow']}/#/experiments/{experiment}/runs", tmp_path / "profile",
                          tmp_path / "experiment_runs.png")  # fmt: skip
    assert "ui-tiny" in runs_page, runs_page[:2000]
    assert f"{1 + len(children)} matching runs" in runs_page, "parent + nested trial runs in the runs table"
    parent_page = _chromium(f"{embedded['mlflow']}/#/experiments/{experiment}/runs/{parent}", tmp_path / "profile",
                            tmp_path / "parent_run.png")  # fmt: skip
    listed = re.search(r"Child runs (.*?) Source", parent_page)
    assert listed is not None, parent_page[:2000]
    assert sorted(name.strip() for name in listed.group(1).split(",")) == sorted(children)
    assert (tmp_path / "experiment_runs.png").stat().st_size > 10_000
    assert (tmp_path / "parent_run.png").stat().st_size > 10_000
