"""The Ray Tune trainable: one rdvae training run per trial, reporting held-out metrics and a checkpoint each epoch."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import tune

from rdvae import DataSplits, HeldOutMetrics, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig, fit
from workers.budget import anneal_end_epoch, capacity_ramp
from workers.spec import SweepSpec
from workers.storage import checkpoint_directory

CHECKPOINT_FILE = "model.pt"
PER_EXAMPLE_FILE = "per_example.npz"
FINAL_FLAG = "final"


def run_config(spec: SweepSpec, params: dict[str, Any], device: str = "cpu") -> RunConfig:
    """The rdvae run of one trial: the spec's fixed settings overridden by the sampled `params`."""
    if params.get("objective", "beta") == "capacity":
        objective = ObjectiveConfig.model_validate({**capacity_ramp(spec).model_dump(), "capacity": float(params["C"])})
    else:
        objective = ObjectiveConfig(kind="beta", beta=float(params["beta"]))
    model_overrides = {key: params[key] for key in ("latent_dim", "decoder") if key in params}
    model = ModelConfig.model_validate({**spec.model.model_dump(), **model_overrides})
    return RunConfig(
        data=spec.dataset,
        model=model,
        objective=objective,
        train=TrainConfig(
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            learning_rate=float(params.get("learning_rate", spec.learning_rate)),
            seed=spec.seed,
            device=device,
            cuda_graph=spec.resources.cuda_graph and device.startswith("cuda"),
            iwae_samples=spec.iwae_samples,
            collapse_rate_threshold=spec.collapse_rate_threshold,
        ),
    )


def _record_start(audit_dir: str, trial_id: str, resumed_from_epoch: int) -> None:
    # One line per process start of a trial: retries and resumes stay auditable after the driver is gone.
    path = Path(audit_dir) / f"{trial_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"pid": os.getpid(), "time": time.time(), "resumed_from_epoch": resumed_from_epoch}
    with path.open("a") as handle:
        handle.write(json.dumps(line) + "\n")


def train_trial(config: dict[str, Any], *, spec_json: str, data: DataSplits, audit_dir: str) -> None:
    """Tune function trainable. Reports every epoch; the last report (`final` = 1) adds IWAE, test metrics and
    the constraint values the searcher passes to Optuna. Runs on CUDA when Ray assigned this trial a GPU."""
    started = time.perf_counter()
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no "Checkpoint successfully created" per epoch
    spec = SweepSpec.model_validate_json(spec_json)
    context = tune.get_context()
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    rdvae_config = run_config(spec, config, device)
    # A capacity trial is collapsed by design while C_t is small: it reports `annealing` = 1 until C_t = C, and no
    # stopper judges it before (ASHA's grace period is raised to the same epoch by the driver).
    capacity = config.get("objective", "beta") == "capacity"
    anneal_end = anneal_end_epoch(spec, int(data.train.shape[0])) if capacity else 0
    resume_from: Path | None = None
    resumed_epoch = 0
    checkpoint = tune.get_checkpoint()
    workdir = Path(tempfile.mkdtemp(prefix="rdvae-trial-"))
    if checkpoint is not None:
        # Copy out of Tune's directory: the next report may rotate the checkpoint we resume from.
        resume_from = workdir / "resume.pt"
        with checkpoint_directory(checkpoint) as directory:
            resume_from.write_bytes((directory / CHECKPOINT_FILE).read_bytes())
            resumed_epoch = json.loads((directory / "epoch.json").read_text())["epoch"]
    _record_start(audit_dir, context.get_trial_id(), resumed_epoch)
    checkpoint_dir = workdir / "checkpoint"
    checkpoint_dir.mkdir()

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        (checkpoint_dir / "epoch.json").write_text(json.dumps({"epoch": epoch}))
        if epoch == spec.epochs:
            # The final report follows at once for the same epoch, with the k-draw ELBO, IWAE, test metrics and
            # this checkpoint: one report per (metric, epoch), and the better estimate is the one recorded.
            return
        annealing = float(epoch < anneal_end)
        tune.report(
            {**metrics, "epoch": epoch, "annealing": annealing, FINAL_FLAG: 0},
            checkpoint=tune.Checkpoint.from_directory(checkpoint_dir),
        )

    result = fit(
        rdvae_config,
        callback=on_epoch,
        data=data,
        resume_from=resume_from,
        checkpoint_path=checkpoint_dir / CHECKPOINT_FILE,
    )
    assert result.validation is not None and result.test is not None
    final = result.validation.as_dict()
    violations = spec.constraint_violations(final)
    final.update({f"constraint_{index}": value for index, value in enumerate(violations)})
    final.update({f"test_{key}": value for key, value in result.test.as_dict().items()})
    final.update({"epoch": spec.epochs, FINAL_FLAG: 1, "train_seconds": result.train_seconds})
    # trial_seconds: this process's whole life (data to device, model, epochs, final IWAE), what a sweep schedules.
    final.update({"trial_seconds": time.perf_counter() - started, "on_gpu": float(device == "cuda")})
    # Per-example held-out bounds travel with the final checkpoint: the driver pairs them across trials.
    save_per_example(checkpoint_dir / PER_EXAMPLE_FILE, result.validation)
    tune.report(final, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))


def save_per_example(path: Path, metrics: HeldOutMetrics) -> None:
    """Write a trial's per-example validation ELBO (and IWAE) as float64 arrays in an .npz."""
    assert metrics.per_example is not None
    arrays = {"elbo": metrics.per_example.elbo.double().numpy()}
    if metrics.per_example.iwae is not None:
        arrays["iwae"] = metrics.per_example.iwae.double().numpy()
    np.savez(path, **arrays)


def load_per_example(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays `save_per_example` wrote, or None when the file is missing (a trial stopped early)."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}
