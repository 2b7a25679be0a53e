"""Benchmark: rdvae's trainer vs the PyTorch-examples VAE loop, examples/s on mnist5k, same model and steps."""

from __future__ import annotations

import argparse
import statistics
import time

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
    fit,
    load_data,
)


def naive_epochs(splits_train: torch.Tensor, config: RunConfig, image_shape: tuple[int, ...]) -> float:
    """The loop of pytorch/examples `vae/main.py`: DataLoader batches, per-batch Python, `loss.item()` per batch.

    Returns seconds for `config.train.epochs` epochs. Like rdvae it drops the last partial batch, so both
    take exactly the same number of optimiser steps.
    """
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, splits_train.shape[1], image_shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    loader = DataLoader(
        TensorDataset(splits_train, torch.zeros(len(splits_train))),
        batch_size=config.train.batch_size,
        shuffle=True,
        drop_last=True,
    )
    started = time.perf_counter()
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
    return time.perf_counter() - started


def rdvae_epochs(splits: DataSplits, config: RunConfig) -> float:
    """Seconds of rdvae's `fit` epoch loop with its held-out evaluation (`eval_seconds`) taken out."""
    result = fit(config, data=splits)
    return result.train_seconds - result.eval_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    splits = load_data(DataConfig(name="mnist5k"))
    config = RunConfig(
        data=DataConfig(name="mnist5k"),
        model=ModelConfig(hidden_dims=(200, 200), latent_dim=16),
        objective=ObjectiveConfig(kind="elbo"),
        # eval_every > epochs: only the last epoch is evaluated, and train_seconds stops before it.
        train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, iwae_samples=0, eval_every=10_000),
    )
    steps = args.epochs * (splits.train.shape[0] // args.batch_size)
    examples = steps * args.batch_size
    print(
        f"mnist5k train {tuple(splits.train.shape)}, batch {args.batch_size}, {steps} optimiser steps per run, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    naive_epochs(splits.train, config, splits.image_shape)  # warm-up
    rdvae_epochs(splits, config)
    naive, ours = [], []
    # Interleaved repeats: a burst of load from elsewhere hits both loops alike.
    for _ in range(args.repeats):
        naive.append(examples / naive_epochs(splits.train, config, splits.image_shape))
        ours.append(examples / rdvae_epochs(splits, config))
    naive_median, ours_median = statistics.median(naive), statistics.median(ours)
    print(f"naive DataLoader loop: median {naive_median:8.0f} examples/s  (runs {[round(v) for v in naive]})")
    print(f"rdvae fit:             median {ours_median:8.0f} examples/s  (runs {[round(v) for v in ours]})")
    # On a shared machine the best run is the least disturbed one: report its ratio too.
    print(f"ratio rdvae / naive: median {ours_median / naive_median:.2f}x, best {max(ours) / max(naive):.2f}x")


if __name__ == "__main__":
    main()
