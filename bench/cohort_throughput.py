"""Benchmark: member-examples/s of a K-member cohort vs K separate `fit` runs, eager and CUDA-graphed, same run.

K separate fits run one after another, each at one `fit`'s rate, so their aggregate rate is one fit's rate for
every K: it is measured once (median of the repeats) and every cohort is divided by it. The naive
PyTorch-examples loop (bench/train_throughput.py) is measured too, for "single trial with CUDA graphs vs the
naive loop". Figures count training examples over the epoch loop without the held-out evaluations ("step"),
and over the whole run, evaluations included ("run"): a cohort evaluates each member with `rdvae.evaluate`,
as `fit` does, one member at a time.

    python bench/cohort_throughput.py                                  # CPU: digits-sized quick check
    python bench/cohort_throughput.py --dataset mnist5k --sizes 1,8,32,128,512,1024 --epochs 3   # a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

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
    fit_cohort,
    load_data,
    resolve_device,
)


def member_configs(args: argparse.Namespace, k: int, cuda_graph: bool) -> list[RunConfig]:
    """K members of a beta sweep: beta log-spaced over [0.25, 8], a seed each (a real sweep's variety)."""
    configs = []
    for index in range(k):
        beta = 0.25 * 32.0 ** (index / max(1, k - 1))
        configs.append(
            RunConfig(
                data=DataConfig(name=args.dataset),
                model=ModelConfig(hidden_dims=tuple(args.hidden), latent_dim=args.latent_dim, decoder=args.decoder),
                objective=ObjectiveConfig(kind="beta", beta=beta),
                # eval_every > epochs: only the last epoch is evaluated (plus the final validation and test).
                train=TrainConfig(
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    seed=index,
                    device=args.device,
                    iwae_samples=0,
                    eval_every=10_000,
                    cuda_graph=cuda_graph,
                ),
            )
        )
    return configs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Timing = dict[str, float | str]


def _timed(run: Callable[[], tuple[float, str]], device: torch.device) -> Timing:
    """{step: epoch-loop seconds without evaluations, run: wall seconds, cpu: this process's CPU seconds, mode}."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    step_seconds, mode = run()
    _sync(device)
    return {"step": step_seconds, "run": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "mode": mode}


def time_fit(splits: DataSplits, config: RunConfig, device: torch.device) -> Timing:
    def run() -> tuple[float, str]:
        result = fit(config, data=splits)
        return result.train_seconds - result.eval_seconds, "fit"

    return _timed(run, device)


def time_cohort(splits: DataSplits, configs: list[RunConfig], device: torch.device) -> Timing:
    def run() -> tuple[float, str]:
        result = fit_cohort(configs, data=splits)
        failed = [m for m in result.members if m.status != "completed"]
        if failed:
            raise RuntimeError(f"{len(failed)} cohort members did not complete: {failed[0].error}")
        mode = "graphed" if result.graphed else f"eager ({result.graph_reason})" if result.graph_reason else "eager"
        return result.train_seconds - result.eval_seconds, mode

    return _timed(run, device)


def naive_run(splits: DataSplits, config: RunConfig, device: torch.device) -> None:
    """The loop of pytorch/examples `vae/main.py` (as in bench/train_throughput.py), on `device`: CPU DataLoader
    batches moved to the device, `loss.item()` per batch, then the held-out evaluations `fit` runs."""
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, splits.input_dim, splits.image_shape).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    train = splits.train.cpu()
    loader = DataLoader(
        TensorDataset(train, torch.zeros(len(train))), batch_size=config.train.batch_size, shuffle=True, drop_last=True
    )
    for _ in range(config.train.epochs):
        model.train()
        for data, _ in loader:
            data = data.to(device)
            optimizer.zero_grad()
            mu, logvar = model.encode(data)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            bce = F.binary_cross_entropy_with_logits(model.decoder(z), data, reduction="sum")
            kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = (bce + kld) / data.shape[0]
            loss.backward()
            loss.item()
            optimizer.step()
    for held_out in (splits.validation, splits.validation, splits.test):
        evaluate(model, held_out)


def time_naive(splits: DataSplits, config: RunConfig, device: torch.device) -> Timing:
    def run() -> tuple[float, str]:
        started = time.perf_counter()
        naive_run(splits, config, device)
        return time.perf_counter() - started, "naive"  # no separate evaluation time: its step is its whole run

    return _timed(run, device)


def median_rate(examples: int, runs: list[Timing], key: str) -> float:
    """Median examples per second of `key` (step, run or cpu seconds) over the repeats."""
    return statistics.median(examples / float(run[key]) for run in runs)


def repeated(measure: Callable[[], Timing], repeats: int) -> list[Timing]:
    measure()  # warm-up: allocator, kernels, first capture
    return [measure() for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", choices=["digits", "mnist5k"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", default=None, help="comma-separated K (default: 1,4,16 on CPU, 1..1024 on CUDA)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, nargs="+", default=[200, 200])
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--decoder", default="mlp", choices=["mlp", "conv", "made"])
    parser.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph runs")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    args.device = str(device)
    default_sizes = "1,8,32,128,512,1024" if device.type == "cuda" else "1,4,16"
    sizes = [int(size) for size in (args.sizes or default_sizes).split(",")]
    splits = load_data(DataConfig(name=args.dataset)).to(device)
    steps = args.epochs * (splits.train.shape[0] // args.batch_size)
    examples = steps * args.batch_size
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"{args.dataset} train {tuple(splits.train.shape)}, MLP {splits.input_dim}-{'-'.join(map(str, args.hidden))}-"
        f"{args.latent_dim} ({args.decoder} decoder), batch {args.batch_size}, {args.epochs} epochs = {steps} steps "
        f"per member; torch {torch.__version__}, {name}; medians of {args.repeats} repeats"
    )
    modes = [False] if args.no_graph or device.type != "cuda" else [False, True]
    single = member_configs(args, 1, cuda_graph=False)[0]
    if args.decoder != "mlp":
        print("note: the naive loop decodes with a factorised decoder; compare it with an mlp decoder only")
    figures: dict[str, object] = {"device": name, "examples_per_member": examples, "cohorts": []}
    naive = repeated(lambda: time_naive(splits, single, device), args.repeats)
    fits = {False: repeated(lambda: time_fit(splits, single, device), args.repeats)}
    if True in modes:
        graphed = member_configs(args, 1, cuda_graph=True)[0]
        fits[True] = repeated(lambda: time_fit(splits, graphed, device), args.repeats)
    naive_rate = median_rate(examples, naive, "run")
    fit_rates = {key: median_rate(examples, fits[False], key) for key in ("step", "run", "cpu")}
    # CPU seconds are the steadier figure on a shared machine: they do not count time spent waiting for a core.
    print(f"{'naive PyTorch-examples loop':32s} {naive_rate:11.0f} ex/s whole run")
    print(f"{'fit, eager (= K separate fits)':32s} {fit_rates['step']:11.0f} ex/s step, {fit_rates['run']:11.0f} "
          f"run, {fit_rates['cpu']:11.0f} per CPU-s; run {fit_rates['run'] / naive_rate:.2f}x naive")  # fmt: skip
    figures.update({"naive": naive_rate, "fit": fit_rates})
    if True in modes:
        graph_rates = {key: median_rate(examples, fits[True], key) for key in ("step", "run", "cpu")}
        print(f"{'fit, cuda_graph':32s} {graph_rates['step']:11.0f} ex/s step, {graph_rates['run']:11.0f} run; "
              f"run {graph_rates['run'] / naive_rate:.2f}x naive, step {graph_rates['step'] / fit_rates['step']:.2f}x "
              f"fit")  # fmt: skip
        figures["fit_graph"] = graph_rates
    for k in sizes:
        for cuda_graph in modes:
            configs = member_configs(args, k, cuda_graph)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                runs = repeated(lambda configs=configs: time_cohort(splits, configs, device), args.repeats)
            except torch.OutOfMemoryError:
                print(f"K = {k:5d} {'graphed' if cuda_graph else 'eager'}: out of memory, larger K skipped")
                break
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
            rates = {key: median_rate(k * examples, runs, key) for key in ("step", "run", "cpu")}
            ratios = {key: rates[key] / fit_rates[key] for key in rates}
            print(f"K = {k:5d} cohort {str(runs[-1]['mode'])[:7]:7s} {rates['step']:11.0f} member-ex/s step "
                  f"({ratios['step']:6.2f}x separate fits), run {ratios['run']:6.2f}x, "
                  f"per CPU-s {ratios['cpu']:6.2f}x; peak {peak:.2f} GiB")  # fmt: skip
            figures["cohorts"].append(  # type: ignore[union-attr]
                {"k": k, "mode": runs[-1]["mode"], "rates": rates, "vs_fit": ratios, "peak_gib": peak}
            )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
