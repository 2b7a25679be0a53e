"""Command line: `rdvae train ...` trains one VAE, shows progress on stderr and prints held-out metrics."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO, get_args

from pydantic import BaseModel, ValidationError

from rdvae.data import DATASETS, DataConfig
from rdvae.datafiles import DataError
from rdvae.evaluate import HeldOutMetrics
from rdvae.likelihoods import Likelihood
from rdvae.models import ModelConfig
from rdvae.objectives import ObjectiveConfig
from rdvae.train import FitResult, RunConfig, TrainConfig, TrainingDivergedError, fit

EXIT_USAGE = 2
EXIT_DIVERGED = 1

# Config field -> the option that sets it, so a validation error names what the user typed.
OPTION_OF_FIELD = {
    ("data", "name"): "--dataset",
    ("data", "path"): "--data-path",
    ("data", "binarization"): "--binarization",
    ("data", "key"): "--data-key",
    ("model", "encoder"): "--encoder",
    ("model", "decoder"): "--decoder",
    ("model", "likelihood"): "--likelihood",
    ("model", "standardize"): "--standardize",
    ("model", "latent_dim"): "--latent-dim",
    ("model", "hidden_dims"): "--hidden",
    ("objective", "kind"): "--objective",
    ("objective", "beta"): "--beta",
    ("objective", "capacity"): "--C",
    ("objective", "gamma"): "--gamma",
    ("objective", "capacity_anneal_steps"): "--anneal-steps",
    ("objective", "capacity_anneal_fraction"): "--anneal-fraction",
    ("train", "epochs"): "--epochs",
    ("train", "batch_size"): "--batch-size",
    ("train", "learning_rate"): "--lr",
    ("train", "seed"): "--seed",
    ("train", "iwae_samples"): "--iwae-samples",
    ("train", "device"): "--device",
    ("train", "cuda_graph"): "--cuda-graph",
}


def _number(kind: Callable[[str], float], low: float, inclusive: bool) -> Callable[[str], float]:
    """An argparse type: a `kind` number above `low` (or at it when `inclusive`), with a message that says so."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low:g}, got {text}")
        return value

    return parse


positive_float = _number(float, 0.0, inclusive=False)
non_negative_float = _number(float, 0.0, inclusive=True)
positive_int = _number(int, 1, inclusive=True)
non_negative_int = _number(int, 0, inclusive=True)


def build_parser() -> argparse.ArgumentParser:
    """The `rdvae` parser with its `train` subcommand."""
    parser = argparse.ArgumentParser(prog="rdvae", description="Rate-distortion VAEs: train and evaluate.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser(
        "train",
        help="train one VAE and print its held-out metrics",
        description="Train one VAE; progress goes to stderr, the held-out metrics table (or --json) to stdout.",
    )
    train.set_defaults(subparser=train)
    data = train.add_argument_group("data")
    data.add_argument("--dataset", choices=[*DATASETS, "file"], help="registered data set, or `file` (default: digits)")
    data.add_argument("--data-path", help="a .npy/.npz/.h5ad under $RDVAE_DATA_ROOT (implies --dataset file)")
    data.add_argument("--data-key", help="the array of a .npz (default: x) or the layer of a .h5ad (default: X)")
    data.add_argument(
        "--binarization",
        choices=["static", "dynamic", "none"],
        help="default: static for mnist5k, digits and synthetic; none for files and synthetic_counts",
    )
    model = train.add_argument_group("model")
    model.add_argument("--encoder", choices=["mlp", "conv"], default="mlp")
    model.add_argument("--decoder", choices=["mlp", "conv", "made"], default="mlp")
    model.add_argument("--likelihood", choices=list(get_args(Likelihood)), default="bernoulli")
    model.add_argument("--standardize", action="store_true", help="gaussian: standardise each feature (stored)")
    model.add_argument("--latent-dim", type=positive_int, default=16)
    model.add_argument("--hidden", type=positive_int, nargs="+", default=[200, 200], metavar="WIDTH")
    objective = train.add_argument_group("objective")
    objective.add_argument(
        "--objective",
        choices=["elbo", "beta", "capacity"],
        help="default: capacity when --C is given, beta when --beta is given, else elbo",
    )
    objective.add_argument("--beta", type=positive_float, help="rate weight of the beta objective")
    objective.add_argument("--C", dest="capacity", type=non_negative_float, help="target rate in nats (capacity)")
    objective.add_argument("--gamma", type=positive_float, default=100.0, help="weight of |R - C| (capacity)")
    objective.add_argument("--anneal-fraction", type=positive_float, default=0.5, help="share of the run raising C")
    objective.add_argument("--anneal-steps", type=non_negative_int, help="steps raising C from 0, instead of the share")
    optimisation = train.add_argument_group("optimisation")
    optimisation.add_argument("--epochs", type=positive_int, default=20)
    optimisation.add_argument("--batch-size", type=positive_int, default=128)
    optimisation.add_argument("--lr", type=positive_float, default=1e-3)
    optimisation.add_argument("--seed", type=non_negative_int, default=0)
    optimisation.add_argument("--iwae-samples", type=non_negative_int, default=100, help="k of the IWAE NLL; 0: skip")
    optimisation.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    optimisation.add_argument(
        "--cuda-graph", action="store_true", help="replay the training step from a CUDA graph (eager off CUDA)"
    )
    output = train.add_argument_group("output")
    output.add_argument("--checkpoint", type=Path, help="write a checkpoint here after every epoch")
    output.add_argument("--resume", type=Path, help="continue from a checkpoint written by --checkpoint")
    output.add_argument("--json", action="store_true", help="print the result as one JSON object")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Build the validated run config; raises `ConfigError` with one line per invalid field of any section."""
    kind = args.objective or ("capacity" if args.capacity is not None else "beta" if args.beta is not None else "elbo")
    objective: dict[str, object] = {
        "kind": kind,
        "gamma": args.gamma,
        "capacity_anneal_fraction": args.anneal_fraction,
        "capacity_anneal_steps": args.anneal_steps,
    }
    if args.beta is not None:
        objective["beta"] = args.beta
    if args.capacity is not None:
        objective["capacity"] = args.capacity
    data = {
        "name": args.dataset or ("file" if args.data_path else "digits"),
        "path": args.data_path,
        "key": args.data_key,
        "binarization": args.binarization,
    }
    model = {
        "encoder": args.encoder,
        "decoder": args.decoder,
        "likelihood": args.likelihood,
        "standardize": args.standardize,
        "latent_dim": args.latent_dim,
        "hidden_dims": tuple(args.hidden),
    }
    train = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "seed": args.seed,
        "iwae_samples": args.iwae_samples,
        "device": args.device,
        "cuda_graph": args.cuda_graph,
    }
    sections: dict[str, tuple[type[BaseModel], dict[str, object]]] = {
        "data": (DataConfig, data),
        "model": (ModelConfig, model),
        "objective": (ObjectiveConfig, objective),
        "train": (TrainConfig, train),
    }
    validated: dict[str, BaseModel] = {}
    messages: list[str] = []
    # Every section is validated, so one run of the command reports every bad field at once.
    for section, (schema, values) in sections.items():
        try:
            validated[section] = schema.model_validate(values)
        except ValidationError as error:
            messages.extend(validation_messages(section, error))
    if messages:
        raise ConfigError(messages)
    return RunConfig.model_validate(validated)


class ConfigError(ValueError):
    """Invalid command-line values, one message line per field."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def validation_messages(section: str, error: ValidationError) -> list[str]:
    """One line per invalid field of config `section`, naming the command-line option where there is one."""
    lines = []
    for detail in error.errors():
        location = (section, *(str(part) for part in detail["loc"]))
        field = ".".join(location)
        option = OPTION_OF_FIELD.get(location[:2]) if len(location) >= 2 else None
        message = str(detail["msg"]).removeprefix("Value error, ")
        lines.append(f"argument {option} ({field}): {message}" if option else f"{field}: {message}")
    return lines


def data_error_message(error: DataError) -> str:
    """`argument --likelihood (model.likelihood): ...` for a data set refused for a field of the config."""
    section, _, name = error.field.partition(".")
    location = ("data" if section == "dataset" else section, name)
    option = OPTION_OF_FIELD.get(location)
    field = ".".join(location)
    return f"argument {option} ({field}): {error.reason}" if option else f"{field}: {error.reason}"


class ProgressBar:
    """`epoch 3/20 [=====     ] elbo -25.3 rate 3.1` on a stream; redrawn in place on a terminal."""

    def __init__(self, epochs: int, stream: TextIO, width: int = 20) -> None:
        self.epochs = epochs
        self.stream = stream
        self.width = width
        self.in_place = stream.isatty()

    def __call__(self, epoch: int, record: dict[str, float]) -> None:
        filled = round(self.width * epoch / self.epochs)
        line = (
            f"epoch {epoch}/{self.epochs} [{'=' * filled}{' ' * (self.width - filled)}] "
            f"elbo {record['elbo']:.1f} rate {record['rate']:.2f} distortion {record['distortion']:.1f}"
        )
        self.stream.write(f"\r{line}\x1b[K" if self.in_place else f"{line}\n")
        if self.in_place and epoch == self.epochs:
            self.stream.write("\n")
        self.stream.flush()


ROWS: list[tuple[str, Callable[[HeldOutMetrics], str]]] = [
    ("rate R (nats)", lambda m: f"{m.rate:.3f}"),
    ("distortion D (nats)", lambda m: f"{m.distortion:.3f}"),
    ("IWAE NLL (nats)", lambda m: "-" if m.iwae_ll is None else f"{-m.iwae_ll:.3f} (k={m.iwae_samples})"),
    ("active units", lambda m: str(m.active_units)),
    ("ELBO (nats)", lambda m: f"{m.elbo:.3f}"),
    ("ELBO std. error (nats)", lambda m: f"{m.elbo_se:.3f}"),
    (
        "mutual info I(x;z)",
        lambda m: f">= {m.mutual_info:.3f} (saturated)" if m.mutual_info_saturated else f"{m.mutual_info:.3f}",
    ),  # fmt: skip
    ("marginal KL", lambda m: "- (MI saturated)" if m.marginal_kl is None else f"{m.marginal_kl:.3f}"),
    ("collapsed", lambda m: "yes" if m.collapsed else "no"),
]


def metrics_table(validation: HeldOutMetrics, test: HeldOutMetrics) -> str:
    """The held-out metrics as an aligned text table with a validation and a test column."""
    cells = [("metric", "validation", "test"), *((name, cell(validation), cell(test)) for name, cell in ROWS)]
    widths = [max(len(row[column]) for row in cells) for column in range(3)]
    lines = [f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}" for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _report(result: FitResult, as_json: bool, checkpoint: Path | None) -> str:
    assert result.validation is not None and result.test is not None
    if not as_json:
        return metrics_table(result.validation, result.test)
    return json.dumps(
        {
            "config": result.config.model_dump(mode="json"),
            "validation": result.validation.as_dict() | {"kl_per_dim": result.validation.kl_per_dim},
            "test": result.test.as_dict() | {"kl_per_dim": result.test.kl_per_dim},
            "epochs_run": int(result.history[-1]["epoch"]) if result.history else 0,
            "stopped_early": result.stopped_early,
            "train_seconds": result.train_seconds,
            "checkpoint": str(checkpoint) if checkpoint else None,
        }
    )


def _usage_error(parser: argparse.ArgumentParser, lines: Sequence[str]) -> int:
    parser.print_usage(sys.stderr)
    for line in lines:
        print(f"{parser.prog}: error: {line}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rdvae` and `python -m rdvae`; returns the exit status (2 for bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse has printed usage and the message (or the help)
        return int(exit_.code or 0)
    train_parser: argparse.ArgumentParser = args.subparser
    try:
        config = config_from_args(args)
    except ConfigError as error:
        return _usage_error(train_parser, error.lines)
    callback = None if args.quiet else ProgressBar(config.train.epochs, sys.stderr)
    try:
        result = fit(config, callback=callback, resume_from=args.resume, checkpoint_path=args.checkpoint)
    except TrainingDivergedError as error:
        print(f"rdvae train: diverged: {error}", file=sys.stderr)
        return EXIT_DIVERGED
    except DataError as error:  # the data set against the model: name the option to change
        return _usage_error(train_parser, [data_error_message(error)])
    except (ValueError, FileNotFoundError) as error:  # bad data file, device or checkpoint: named where raised
        return _usage_error(train_parser, [str(error)])
    print(_report(result, args.json, args.checkpoint))
    return 0


if __name__ == "__main__":
    sys.exit(main())
