"""The trial function without a Ray cluster: device and CUDA graphs from Ray's GPU assignment, Tune's resources."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from workers import SweepSpec
from workers import trainable as trainable_module
from workers.sweep import _tuner
from workers.trainable import train_trial


class _CapturedError(Exception):
    """Raised by the stand-in for `fit` once it has seen the run config."""


@pytest.mark.parametrize(("gpu_ids", "device"), [([0], "cuda"), ([], "cpu")])
def test_a_trial_trains_on_cuda_exactly_when_ray_assigned_it_a_gpu(
    gpu_ids: list[int], device: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, str] = {}

    def fake_fit(config: object, **_: object) -> None:
        seen["device"] = config.train.device  # type: ignore[attr-defined]
        seen["cuda_graph"] = config.train.cuda_graph  # type: ignore[attr-defined]
        raise _CapturedError

    monkeypatch.setattr(trainable_module, "fit", fake_fit)
    monkeypatch.setattr(trainable_module.ray, "get_gpu_ids", lambda: gpu_ids)
    monkeypatch.setattr(trainable_module.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t0"))
    monkeypatch.setattr(trainable_module.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spec = SweepSpec.model_validate({"dataset": "digits", "resources": {"gpus": 0.25, "cuda_graph": True}})
    with pytest.raises(_CapturedError):
        train_trial(
            {"objective": "beta", "beta": 1.0}, spec_json=spec.model_dump_json(), data=None, audit_dir=str(tmp_path)
        )
    # resources.cuda_graph reaches rdvae on a GPU only: a CPU trial trains eagerly without a warning per trial
    assert seen == {"device": device, "cuda_graph": device == "cuda"}


def test_tune_receives_the_fractional_gpu_and_the_retry_budget(tmp_path: Path) -> None:
    spec = SweepSpec.model_validate(
        {"dataset": "digits", "resources": {"cpus": 2, "gpus": 0.25}, "max_failures": 3, "n_trials": 4}
    )
    tuner = _tuner(spec, "resources", tmp_path, tmp_path / "starts")
    # Building a Tuner starts no Ray; its private fields are the only place the request is visible before fit().
    local = tuner._local_tuner
    assert local._trainable._resources.bundles == [{"CPU": 2.0, "GPU": 0.25}]
    assert local._run_config.failure_config.max_failures == 3
    assert local._tune_config.num_samples == spec.n_trials
