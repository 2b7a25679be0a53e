"""Check on a GPU that CUDA graphs and cohorts change speed, not results: held-out R and D side by side.

1. A cohort graphed vs the same cohort eager: members draw their batches and noise outside the graph, so the two
   differ only by float rounding (expected: |dR|, |dD| < 0.05 nats).
2. Each cohort member vs its separate `fit` on the same device (same draws up to CUDA's RNG offsets; expected
   within the seed-to-seed spread, < 1.5 nats).
3. `fit` with `train.cuda_graph` vs eager `fit` (noise from the device generator inside the graph; same bound).

    python bench/graph_agreement.py              # prints one line per comparison and PASS/FAIL; exit 1 on a FAIL
"""

from __future__ import annotations

import argparse
import sys

import torch

from rdvae import DataConfig, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig, fit, fit_cohort, load_data


def configs(args: argparse.Namespace, cuda_graph: bool) -> list[RunConfig]:
    return [
        RunConfig(
            data=DataConfig(name=args.dataset),
            model=ModelConfig(hidden_dims=(200,), latent_dim=16, decoder=args.decoder),
            objective=objective,
            train=TrainConfig(epochs=args.epochs, seed=seed, device=args.device, iwae_samples=0, cuda_graph=cuda_graph),
        )
        for seed, objective in enumerate(
            [
                ObjectiveConfig(kind="beta", beta=0.5),
                ObjectiveConfig(kind="beta", beta=2.0, free_bits=0.2),
                ObjectiveConfig(kind="capacity", capacity=8.0, capacity_anneal_fraction=0.5),
                ObjectiveConfig(kind="beta", beta=1.0, kl_warmup_steps=100),
            ]
        )
    ]


def compare(label: str, pairs: list[tuple[object, object]], bound: float) -> bool:
    worst = 0.0
    for first, second in pairs:
        worst = max(worst, abs(first.rate - second.rate), abs(first.distortion - second.distortion))  # type: ignore[attr-defined]
    ok = worst < bound
    print(f"{'PASS' if ok else 'FAIL'} {label}: largest |dR|, |dD| = {worst:.4f} nats (bound {bound})", flush=True)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="mnist5k", choices=["digits", "mnist5k"])
    parser.add_argument("--decoder", default="mlp", choices=["mlp", "conv", "made"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    splits = load_data(DataConfig(name=args.dataset))
    eager_configs, graph_configs = configs(args, False), configs(args, True)
    eager = fit_cohort(eager_configs, data=splits)
    graphed = fit_cohort(graph_configs, data=splits)
    print(f"cohort graphed: {graphed.graphed} ({graphed.graph_reason or 'captured'}), device {args.device}")
    alone = [fit(config, data=splits) for config in eager_configs]
    graphed_fits = [fit(config, data=splits) for config in graph_configs[:2]]
    checks = [
        ("cohort graphed vs eager", graphed.members, eager.members, 0.05),
        ("cohort members vs separate fits", eager.members, alone, 1.5),
        ("fit cuda_graph vs eager fit", graphed_fits, alone[:2], 1.5),
    ]
    results = [
        compare(label, [(a.validation, b.validation) for a, b in zip(first, second, strict=True)], bound)
        for label, first, second, bound in checks
    ]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = False  # the figures compare float32 runs, as `fit` trains by default
    main()
