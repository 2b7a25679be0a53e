"""Benchmark: wall time of an N-trial beta x C sweep as cohorts vs one trial per process, same device, same run.

Today's way: `workers.run_sweep` — a real Ray Tune + Optuna + MLflow sweep, one process per trial, each asking
`--gpus` of a GPU (0.25: four at a time). The cohort way: the same number of run configurations, built by
`workers.trainable.run_config` exactly as a trial builds its own, half beta (log-uniform) and half C (uniform)
from the spec's ranges, trained by `rdvae.fit_cohort` in cohorts of `--cohort-size`, one after another in this
process, without Ray, Optuna or MLflow: the training, evaluation and selection inputs every trial needs. The cohort
sweep: `workers.run_sweep` with `cohort_size` — cohorts as Ray Tune trials, each asking `--cohort-gpus` of a GPU,
searched by Optuna K at a time, each member its own MLflow child run (what a user runs).
Both sides train every trial for all its epochs (no ASHA, no collapse stopper) with the same IWAE samples.

    python bench/sweep_gpu.py --trials 256 --epochs 10 --gpus 0.25          # a GPU (minutes)
    python bench/sweep_gpu.py --dataset digits --trials 8 --epochs 2 --gpus 0 --cohort-size 8   # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

import ray
import torch

from rdvae import fit_cohort, load_data, resolve_device, split_into_cohorts
from workers import SweepSpec, run_sweep
from workers.sweep import connect_ray
from workers.trainable import run_config


def build_spec(args: argparse.Namespace) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "name": "sweep-gpu",
            "dataset": {"name": args.dataset},
            "model": {"latent_dim": args.latent_dim, "hidden_dims": args.hidden},
            "search_space": {
                "objective": ["beta", "capacity"],
                "beta": {"low": 0.1, "high": 10.0},
                "C": {"low": 0.0, "high": 30.0},
            },  # fmt: skip
            "n_trials": args.trials,
            "max_concurrent_trials": args.concurrency,
            "epochs": args.epochs,
            "iwae_samples": args.iwae_samples,
            "resources": {"cpus": 1, "gpus": args.gpus},
            "sampler": "random",
            "constraints": [],
            "objectives": [{"metric": "elbo"}, {"metric": "active_units"}],
            "early_stopping": {"asha": False, "stop_collapsed": False},
            "mlflow": {"experiment_name": "bench-sweep-gpu", "log_models": False},
        }
    )


def cohort_params(spec: SweepSpec, trials: int, seed: int) -> list[dict[str, float | str]]:
    """`trials` parameter sets from the spec's space: beta log-uniform, C uniform, the two families alternating."""
    rng = random.Random(seed)
    space = spec.search_space
    params: list[dict[str, float | str]] = []
    for index in range(trials):
        if index % 2 == 0:
            log_beta = rng.uniform(math.log(space.beta.low), math.log(space.beta.high))
            params.append({"objective": "beta", "beta": math.exp(log_beta)})
        else:
            params.append({"objective": "capacity", "C": rng.uniform(space.C.low, space.C.high)})
    return params


def time_cohorts(spec: SweepSpec, args: argparse.Namespace) -> tuple[float, int]:
    """(wall seconds, members completed) of the sweep's trials trained as cohorts in this process."""
    device = resolve_device("cuda" if args.gpus > 0 and torch.cuda.is_available() else "cpu")
    configs = [run_config(spec, params, device=str(device)) for params in cohort_params(spec, args.trials, spec.seed)]
    if args.cuda_graph:
        configs = [c.model_copy(update={"train": c.train.model_copy(update={"cuda_graph": True})}) for c in configs]
    started = time.perf_counter()
    splits = load_data(spec.dataset)
    completed = 0
    for group in split_into_cohorts(configs, args.cohort_size):
        result = fit_cohort([configs[index] for index in group], data=splits)
        completed += sum(member.status == "completed" for member in result.members)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, completed


def time_ray_sweep(spec: SweepSpec, args: argparse.Namespace) -> tuple[float, int]:
    """(wall seconds, trials completed) of today's sweep: Ray Tune + Optuna + MLflow, one process per trial."""
    with tempfile.TemporaryDirectory(prefix="rdvae-bench-") as scratch:
        tracking_uri = f"sqlite:///{scratch}/mlflow.db"
        connect_ray(args.ray_address)
        started = time.perf_counter()
        try:
            result = run_sweep(spec, storage_root=Path(scratch) / "sweeps", tracking_uri=tracking_uri)
        finally:
            ray.shutdown()
        seconds = time.perf_counter() - started
    return seconds, sum(trial.status == "completed" for trial in result.trials)


def time_cohort_sweep(spec: SweepSpec, args: argparse.Namespace) -> tuple[float, int]:
    """(wall seconds, members completed) of the real sweep with cohorts as Ray Tune trials."""
    gpus = args.cohort_gpus if args.gpus > 0 else 0.0
    resources = {"cpus": 1, "gpus": gpus, "cuda_graph": args.cuda_graph}  # graphs inside the Tune cohort trials too
    cohort_spec = spec.model_copy(update={"cohort_size": args.cohort_size, "resources": resources})
    return time_ray_sweep(SweepSpec.model_validate(cohort_spec.model_dump()), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist5k", choices=["digits", "mnist5k"])
    parser.add_argument("--trials", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--gpus", type=float, default=0.25, help="GPU fraction per Ray trial (0: CPU trials)")
    parser.add_argument("--concurrency", type=int, default=4, help="Ray trials at a time")
    parser.add_argument("--cohort-size", type=int, default=128)
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="cohorts replay their step from a CUDA graph (in this process, and as Tune trials: resources.cuda_graph)",
    )
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--hidden", type=int, nargs="+", default=[200])
    parser.add_argument("--iwae-samples", type=int, default=100)
    parser.add_argument("--ray-address", default=None, help="default: a local Ray started here")
    parser.add_argument("--skip-ray", action="store_true", help="time the cohorts only")
    parser.add_argument("--cohort-gpus", type=float, default=1.0, help="GPU fraction per cohort in the cohort sweep")
    parser.add_argument("--skip-cohort-sweep", action="store_true", help="no run_sweep with cohort_size")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    spec = build_spec(args)
    device = torch.cuda.get_device_name() if args.gpus > 0 and torch.cuda.is_available() else "cpu"
    print(
        f"{args.trials} trials (beta x C) on {args.dataset}, {args.epochs} epochs, IWAE {args.iwae_samples}; "
        f"device {device}; torch {torch.__version__}"
    )
    cohort_seconds, cohort_done = time_cohorts(spec, args)
    print(f"cohorts of {args.cohort_size}{' (CUDA graphs)' if args.cuda_graph else ''}: {cohort_seconds:8.1f} s wall, "
          f"{cohort_done}/{args.trials} members completed")  # fmt: skip
    figures: dict[str, float | int | str] = {"device": device, "trials": args.trials, "cohort_seconds": cohort_seconds}
    if not args.skip_ray:
        ray_seconds, ray_done = time_ray_sweep(spec, args)
        print(f"one trial per process (Ray Tune, {args.gpus} GPU each, {args.concurrency} at a time): "
              f"{ray_seconds:8.1f} s wall, {ray_done}/{args.trials} trials completed")  # fmt: skip
        print(f"ratio one-trial-per-process / cohorts: {ray_seconds / cohort_seconds:.1f}x")
        figures.update({"ray_seconds": ray_seconds, "ratio": ray_seconds / cohort_seconds})
    if not args.skip_cohort_sweep:
        sweep_seconds, sweep_done = time_cohort_sweep(spec, args)
        gpus = args.cohort_gpus if args.gpus > 0 else 0
        print(f"cohort sweep (run_sweep, cohort_size {args.cohort_size}, {gpus} GPU per cohort): "
              f"{sweep_seconds:8.1f} s wall, {sweep_done}/{args.trials} members completed")  # fmt: skip
        figures["cohort_sweep_seconds"] = sweep_seconds
        if "ray_seconds" in figures:
            print(f"ratio one-trial-per-process / cohort sweep: {figures['ray_seconds'] / sweep_seconds:.1f}x")
            figures["sweep_ratio"] = float(figures["ray_seconds"]) / sweep_seconds
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
