"""Benchmark: rdvae's trainer vs the PyTorch-examples VAE loop, examples/s on mnist5k, same model, steps, eval."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from rdvae import (
    DataConfig,
    DataSplits,
    ModelConfig,
    ObjectiveConfig,
    RunConfig,
    TrainConfig,
    build_model,
    evaluate,
    fit,
    load_data,
)


def naive_run(splits: DataSplits, config: RunConfig) -> None:
    """The loop of pytorch/examples `vae/main.py`: DataLoader batches, per-batch Python, `loss.item()` per batch.

    Like rdvae it drops the last partial batch, so both take exactly the same optimiser steps; then it runs
    the same held-out evaluations as `fit` (validation at the last epoch, final validation and test).
    """
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, splits.input_dim, splits.image_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    loader = DataLoader(
        TensorDataset(splits.train, torch.zeros(len(splits.train))),
        batch_size=config.train.batch_size,
        shuffle=True,
        drop_last=True,
    )
    for _ in range(config.train.epochs):
        model.train()
        train_loss = 0.0
        for data, _ in loader:
            optimizer.zero_grad()
            mu, logvar = model.encode(data)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            logits = model.decoder(z)
            bce = F.binary_cross_entropy_with_logits(logits, data, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (bce + kld) / data.shape[0]
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
    for held_out in (splits.validation, splits.validation, splits.test):
        evaluate(model, held_out)


def rdvae_run(splits: DataSplits, config: RunConfig) -> None:
    fit(config, data=splits)


def timed(run: Callable[[DataSplits, RunConfig], None], splits: DataSplits, config: RunConfig) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one whole run."""
    wall, cpu = time.perf_counter(), time.process_time()
    run(splits, config)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    splits = load_data(DataConfig(name="mnist5k"))
    config = RunConfig(
        data=DataConfig(name="mnist5k"),
        model=ModelConfig(hidden_dims=(200, 200), latent_dim=16),
        objective=ObjectiveConfig(kind="elbo"),
        # eval_every > epochs: only the last epoch is evaluated (plus the final validation and test).
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, iwae_samples=0, eval_every=10_000),
    )
    steps = args.epochs * (splits.train.shape[0] // args.batch_size)
    examples = steps * args.batch_size
    print(
        f"mnist5k train {tuple(splits.train.shape)}, batch {args.batch_size}, {steps} optimiser steps per run, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    timed(naive_run, splits, config)  # warm-up
    timed(rdvae_run, splits, config)
    runs: dict[str, list[tuple[float, float]]] = {"naive": [], "rdvae": []}
    # Interleaved repeats: a burst of load from elsewhere hits both loops alike.
    for _ in range(args.repeats):
        runs["naive"].append(timed(naive_run, splits, config))
        runs["rdvae"].append(timed(rdvae_run, splits, config))
    rates = {}
    for name, label in (("naive", "naive DataLoader loop"), ("rdvae", "rdvae fit")):
        wall = [examples / seconds for seconds, _ in runs[name]]
        cpu = [examples / seconds for _, seconds in runs[name]]
        rates[name] = (statistics.median(wall), statistics.median(cpu))
        print(f"{label:22s} median {rates[name][0]:8.0f} examples/s wall, {rates[name][1]:8.0f} per CPU-second "
              f"(wall runs {[round(value) for value in wall]})")  # fmt: skip
    wall_ratio = rates["rdvae"][0] / rates["naive"][0]
    cpu_ratio = rates["rdvae"][1] / rates["naive"][1]
    # CPU time is the steadier figure on a shared machine: it does not count time spent waiting for a core.
    print(f"ratio rdvae / naive: {wall_ratio:.2f}x wall-clock, {cpu_ratio:.2f}x per CPU-second")


if __name__ == "__main__":
    main()
