"""The shipped answer to the seed question: examples/digits_collapse.yaml, run as shipped by the driver CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workers import SweepResult, load_spec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits_collapse.yaml"


def test_digits_collapse_reports_a_collapsed_max_elbo_model_and_keeps_a_non_collapsed_one(
    tmp_path: Path, ray_cluster: str, mlflow_server: str
) -> None:
    result_file = tmp_path / "result.json"
    command = [
        sys.executable, "-m", "workers", "run", "--spec", str(EXAMPLE), "--sweep-id", "digits-collapse",
        "--storage-root", str(tmp_path / "sweeps"), "--ray-address", ray_cluster, "--tracking-uri", mlflow_server,
        "--result-file", str(result_file),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-8000:]
    result = SweepResult.model_validate_json(result_file.read_text())
    selection = result.selection
    spec = load_spec(EXAMPLE)
    assert [t.status for t in result.trials] == ["completed"] * spec.n_trials and selection.censored_trials == []
    # The seed's situation: the best held-out ELBO belongs to a collapsed model ...
    assert selection.max_elbo is not None and selection.max_elbo_collapsed is True
    assert selection.max_elbo.metrics["rate"] < spec.collapse_rate_threshold
    # ... and the product keeps the best non-collapsed one, saying what it costs and how sure that is.
    kept = selection.recommended
    assert kept is not None and not kept.collapsed and kept.metrics["active_units"] >= 1
    assert selection.elbo_gap is not None and selection.elbo_gap_se is not None
    assert selection.elbo_gap > 2 * selection.elbo_gap_se > 0  # a real cost, not Monte-Carlo noise
    assert selection.iwae_gap is not None and selection.iwae_gap.standard_error is not None
    assert selection.max_iwae is not None and selection.bounds_disagree is not None
    assert kept.metrics["elbo_samples"] == spec.iwae_samples  # the final ELBO uses the IWAE draws
    assert "The max-ELBO model is collapsed" in selection.reason and f"Keep trial {kept.number}" in selection.reason
    assert f"{selection.elbo_gap:.3f} ± {selection.elbo_gap_se:.3f} nats of held-out ELBO" in selection.reason
    assert "IWAE bound (k=100)" in selection.reason
    # The front of (ELBO, rate) holds every non-collapsed β, not one model.
    assert len({t.trial_id for t in selection.front}) >= 2


def test_digits_beta_as_shipped_has_a_front_of_at_least_three_distinct_models(
    tmp_path: Path, ray_cluster: str, mlflow_server: str
) -> None:
    result_file = tmp_path / "result.json"
    command = [
        sys.executable, "-m", "workers", "run", "--spec", str(ROOT / "examples" / "digits_beta.yaml"),
        "--sweep-id", "digits-beta", "--storage-root", str(tmp_path / "sweeps"), "--ray-address", ray_cluster,
        "--tracking-uri", mlflow_server, "--result-file", str(result_file),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    front = SweepResult.model_validate_json(result_file.read_text()).selection.front
    distinct = {(round(t.metrics["elbo"], 3), round(t.metrics["rate"], 3)) for t in front}
    assert len(distinct) >= 3, [(t.number, t.params, t.metrics["elbo"], t.metrics["rate"]) for t in front]
