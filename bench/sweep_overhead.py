"""Benchmark: sweep wall time ÷ (Σ trials' own time ÷ concurrency) — what Ray Tune, Optuna and MLflow add."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ray
from mlflow import MlflowClient

from workers import SweepSpec, run_sweep
from workers.sweep import connect_ray


def build_spec(args: argparse.Namespace) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "name": "overhead",
            "dataset": args.dataset,
            "model": {"latent_dim": args.latent_dim, "hidden_dims": args.hidden},
            "search_space": {"beta": {"low": 0.5, "high": 2.0}},
            "n_trials": args.trials,
            "max_concurrent_trials": args.concurrency,
            "epochs": args.epochs,
            "iwae_samples": args.iwae_samples,
            "sampler": "random",
            "constraints": [],
            "objectives": [{"metric": "elbo"}, {"metric": "active_units"}],
            # No early stopping: every trial must run its full length for the ratio to mean anything.
            "early_stopping": {"asha": False, "stop_collapsed": False},
            "mlflow": {"experiment_name": "bench-overhead", "log_models": not args.no_models},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist5k"])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64])
    parser.add_argument("--iwae-samples", type=int, default=10)
    parser.add_argument("--no-models", action="store_true", help="skip logging each trial's model to MLflow")
    parser.add_argument("--ray-address", default=None, help="default: a local Ray started here")
    args = parser.parse_args()
    spec = build_spec(args)
    with tempfile.TemporaryDirectory(prefix="rdvae-bench-") as scratch:
        tracking_uri = f"sqlite:///{scratch}/mlflow.db"
        started = time.perf_counter()
        connect_ray(args.ray_address)
        ray_seconds = time.perf_counter() - started
        # A new SQLite store runs MLflow's schema migrations (seconds); a deployment has its store already.
        started = time.perf_counter()
        MlflowClient(tracking_uri).search_experiments()
        store_seconds = time.perf_counter() - started
        sweep_started = time.time()
        try:
            result = run_sweep(spec, storage_root=Path(scratch) / "sweeps", tracking_uri=tracking_uri)
        finally:
            ray.shutdown()
        starts = [
            json.loads(line)["time"]
            for path in Path(result.storage_path or scratch).glob("starts/*.jsonl")
            for line in path.read_text().splitlines()
        ]
    first_start = min(starts) - sweep_started
    trial_seconds = [t.metrics["trial_seconds"] for t in result.trials if "trial_seconds" in t.metrics]
    train_seconds = [t.metrics["train_seconds"] for t in result.trials if "train_seconds" in t.metrics]
    ideal = sum(trial_seconds) / args.concurrency
    print(f"command: python bench/sweep_overhead.py {' '.join(vars_to_flags(args))}")
    print(
        f"{len(trial_seconds)}/{args.trials} trials finished on {args.dataset}, {args.epochs} epochs, concurrency "
        f"{args.concurrency}; mean trial {sum(trial_seconds) / max(1, len(trial_seconds)):.2f} s "
        f"(of which epoch loop {sum(train_seconds) / max(1, len(train_seconds)):.2f} s)"
    )
    print(f"not in the ratio: Ray start/connect {ray_seconds:.1f} s, new MLflow SQLite store {store_seconds:.1f} s")
    print(f"sweep wall time: {result.wall_seconds:.1f} s; Σ trial time / concurrency: {ideal:.1f} s")
    print(f"overhead ratio (wall / ideal): {result.wall_seconds / ideal:.2f}  (target <= 1.15 for ~30 s trials)")
    print(
        f"fixed start-up until the first trial runs (parent run, data, Tuner, first worker processes): "
        f"{first_start:.1f} s; ratio without it: {(result.wall_seconds - first_start) / ideal:.2f}"
    )
    print(f"per-trial overhead: {(result.wall_seconds - ideal) * args.concurrency / max(1, len(trial_seconds)):.2f} s")


def vars_to_flags(args: argparse.Namespace) -> list[str]:
    flags = []
    for key, value in vars(args).items():
        if value in (None, False):
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, list):
            flags.extend([flag, *map(str, value)])
        else:
            flags.extend([flag, str(value)])
    return flags


if __name__ == "__main__":
    main()
