"""Benchmark: held-out R, D, ELBO, IWAE NLL and collapse of factorised vs MADE decoders across beta on mnist5k."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from rdvae import DataConfig, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig, fit, load_data

FAMILIES = {
    "mlp": "factorised Bernoulli (MLP)",
    "made": "autoregressive (MADE)",
}


def run_config(decoder: str, beta: float, args: argparse.Namespace) -> RunConfig:
    hidden = tuple(args.made_hidden) if decoder == "made" else tuple(args.hidden)
    return RunConfig(
        data=DataConfig(name="mnist5k", binarization="static"),
        model=ModelConfig(decoder=decoder, latent_dim=args.latent_dim, hidden_dims=hidden, activation="tanh"),
        objective=ObjectiveConfig(kind="elbo") if beta == 1.0 else ObjectiveConfig(kind="beta", beta=beta),
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            seed=args.seed,
            eval_every=args.epochs,
            iwae_samples=args.iwae_samples,
            device="cpu",
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.5, 1.0, 2.0, 5.0])
    parser.add_argument("--decoders", nargs="+", choices=sorted(FAMILIES), default=["mlp", "made"])
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--hidden", type=int, nargs="+", default=[200, 200])
    parser.add_argument("--made-hidden", type=int, nargs="+", default=[500, 500])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--iwae-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        # On a shared, oversubscribed machine one thread per run avoids OpenMP threads waiting on each other.
        torch.set_num_threads(args.threads)
    splits = load_data(DataConfig(name="mnist5k", binarization="static"))
    rows: dict[str, list[tuple[float, float, dict[str, float]]]] = {decoder: [] for decoder in args.decoders}
    started = time.perf_counter()
    for decoder in args.decoders:
        for beta in args.betas:
            run_started = time.perf_counter()
            result = fit(run_config(decoder, beta, args), data=splits)
            assert result.validation is not None and result.test is not None
            rows[decoder].append((beta, result.validation.elbo, result.test.as_dict()))
            print(
                f"{decoder} beta={beta}: test elbo {result.test.elbo:.2f} rate {result.test.rate:.2f} "
                f"({time.perf_counter() - run_started:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    print(f"command: python bench/heldout_table.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"mnist5k static binarisation: {tuple(splits.train.shape)} train, {splits.test.shape[0]} test; "
        f"{args.epochs} epochs, latent {args.latent_dim}, IWAE k={args.iwae_samples}; "
        f"test metrics in nats, ★ = max validation ELBO of the family; total {time.perf_counter() - started:.0f} s\n"
    )
    print("| decoder | β | R | D | −ELBO | IWAE NLL | active units | collapsed |")
    print("|---|---|---|---|---|---|---|---|")
    for decoder, family in rows.items():
        best = max(range(len(family)), key=lambda index: family[index][1])
        for index, (beta, _, test) in enumerate(family):
            star = " ★" if index == best else ""
            nll = f"{test['nll']:.2f}" if "nll" in test else "—"
            print(
                f"| {FAMILIES[decoder]}{star} | {beta:g} | {test['rate']:.2f} | {test['distortion']:.2f} | "
                f"{-test['elbo']:.2f} | {nll} | {int(test['active_units'])}/{args.latent_dim} | "
                f"{'yes' if test['collapsed'] else 'no'} |"
            )


if __name__ == "__main__":
    main()
