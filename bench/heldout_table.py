"""Benchmark: held-out R, D, ELBO, IWAE and collapse across β, decoder families and seeds — and the verdict per seed.

For every seed (data split and training seed alike) and decoder family, each β is trained to the full budget and
evaluated on the validation split with k IWAE draws per example (the same draws give the ELBO). The verdict per
(seed, family) is the product's: is the max-ELBO model collapsed, what the best non-collapsed one costs in ELBO
(± paired SE over the validation examples) and which one the IWAE bound prefers.

    python bench/heldout_table.py --dataset digits --decoders made --made-hidden 256 256 --latent-dim 8 \\
        --epochs 100 --batch-size 64 --lr 3e-3 --betas 0.5 1 2 4 --seeds 0 1 2 3 4 5 6 --iwae-samples 100
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from rdvae import DataConfig, HeldOutMetrics, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig, fit, load_data
from rdvae.metrics import paired_difference

FAMILIES = {"mlp": "factorised Bernoulli (MLP)", "made": "autoregressive (MADE)"}


@dataclass
class Cell:
    seed: int
    decoder: str
    beta: float
    held_out: HeldOutMetrics


def run_config(decoder: str, beta: float, seed: int, args: argparse.Namespace) -> RunConfig:
    hidden = tuple(args.made_hidden) if decoder == "made" else tuple(args.hidden)
    return RunConfig(
        data=DataConfig(name=args.dataset, binarization=args.binarization, split_seed=seed),
        model=ModelConfig(decoder=decoder, latent_dim=args.latent_dim, hidden_dims=hidden, activation="tanh"),
        objective=ObjectiveConfig(kind="elbo") if beta == 1.0 else ObjectiveConfig(kind="beta", beta=beta),
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            seed=seed,
            eval_every=args.epochs,
            iwae_samples=args.iwae_samples,
            device=args.device,
        ),
    )


def verdict(cells: list[Cell]) -> str:
    """One line: the max-ELBO β, collapsed or not; the best non-collapsed β and its cost ± paired SE; IWAE's pick."""
    best = max(cells, key=lambda c: c.held_out.elbo)
    kept = max((c for c in cells if not c.held_out.collapsed), key=lambda c: c.held_out.elbo, default=None)
    by_iwae = max(cells, key=lambda c: c.held_out.iwae_ll or float("-inf"))
    line = f"max ELBO β={best.beta:g} ({'collapsed' if best.held_out.collapsed else 'not collapsed'})"
    if kept is not None and kept is not best:
        assert best.held_out.per_example is not None and kept.held_out.per_example is not None
        gap, se = paired_difference(best.held_out.per_example.elbo, kept.held_out.per_example.elbo)
        line += f"; keep β={kept.beta:g}: costs {gap:.3f} ± {se:.3f} nats ({gap / se:.1f} SE)"
    return line + f"; IWAE prefers β={by_iwae.beta:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["digits", "mnist5k"], default="digits")
    parser.add_argument("--binarization", choices=["static", "dynamic"], default="dynamic")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--decoders", nargs="+", choices=sorted(FAMILIES), default=["mlp", "made"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--made-hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--iwae-samples", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cells: list[Cell] = []
    started = time.perf_counter()
    for seed in args.seeds:
        splits = load_data(DataConfig(name=args.dataset, binarization=args.binarization, split_seed=seed))
        for decoder in args.decoders:
            for beta in args.betas:
                run_started = time.perf_counter()
                result = fit(run_config(decoder, beta, seed, args), data=splits)
                assert result.validation is not None
                cells.append(Cell(seed, decoder, beta, result.validation))
                print(f"seed {seed} {decoder} β={beta:g}: ELBO {result.validation.elbo:.3f} R "
                      f"{result.validation.rate:.3f} ({time.perf_counter() - run_started:.0f} s)",
                      file=sys.stderr, flush=True)  # fmt: skip
    print(f"command: python bench/heldout_table.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"{args.dataset}, {args.binarization} binarisation, {splits.train.shape[0]} training / "
          f"{splits.validation.shape[0]} validation examples; {args.epochs} epochs, latent {args.latent_dim}; "
          f"validation metrics in nats, ELBO and IWAE from k = {args.iwae_samples} draws per example; "
          f"mean ± sd over {len(args.seeds)} seed(s); {time.perf_counter() - started:.0f} s\n")  # fmt: skip
    print("| decoder | β | R | D | −ELBO | −IWAE (NLL bound) | active units | collapsed |")
    print("|---|---|---|---|---|---|---|---|")
    for decoder in args.decoders:
        for beta in args.betas:
            group = [c.held_out for c in cells if c.decoder == decoder and c.beta == beta]
            print(f"| {FAMILIES[decoder]} | {beta:g} | {_stat([m.rate for m in group])} | "
                  f"{_stat([m.distortion for m in group])} | {_stat([-m.elbo for m in group])} | "
                  f"{_stat([-(m.iwae_ll or 0.0) for m in group])} | {_stat([m.active_units for m in group], 1)} | "
                  f"{sum(m.collapsed for m in group)}/{len(group)} |")  # fmt: skip
    print()
    for decoder in args.decoders:
        lines = [verdict([c for c in cells if c.decoder == decoder and c.seed == seed]) for seed in args.seeds]
        collapsed = sum("(collapsed)" in line for line in lines)
        print(f"{FAMILIES[decoder]}: the max-ELBO model is collapsed in {collapsed} of {len(lines)} seeds")
        for seed, line in zip(args.seeds, lines, strict=True):
            print(f"  seed {seed}: {line}")


def _stat(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


if __name__ == "__main__":
    main()
