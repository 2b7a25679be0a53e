"""The trainer: a plain loop over on-device tensors with shuffled index batches and an epoch callback."""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rdvae._graphs import GraphedStep, graph_unavailable_reason
from rdvae.data import DataConfig, DataSplits, binarize, load_data
from rdvae.datacheck import check_splits
from rdvae.evaluate import HeldOutMetrics, evaluate
from rdvae.metrics import COLLAPSE_RATE_THRESHOLD, gaussian_kl
from rdvae.models import VAE, ModelConfig, build_model
from rdvae.objectives import ObjectiveConfig, training_loss

EpochCallback = Callable[[int, dict[str, float]], "bool | None"]

logger = logging.getLogger("rdvae")


class TrainConfig(BaseModel):
    """Optimisation settings of one training run."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no true -> 1, no "3" -> 3

    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0)
    device: str = Field("auto", description="`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.")
    compile: bool = Field(False, description="Wrap the model in torch.compile (worth it for long GPU runs).")
    eval_every: int = Field(1, ge=1, description="Held-out metrics every this many epochs (and at the last).")
    iwae_samples: int = Field(100, ge=0, le=10_000, description="k of the final held-out IWAE bound; 0: skip.")
    grad_clip: float | None = Field(None, gt=0.0, description="Clip the gradient norm to this value.")
    collapse_rate_threshold: float = Field(
        COLLAPSE_RATE_THRESHOLD, gt=0.0, le=1e4, description="Nats; a held-out rate below it counts as collapsed."
    )
    cuda_graph: bool = Field(
        False,
        description="Capture the whole training step (forward, backward, Adam) in a CUDA graph and replay it; "
        "off CUDA it trains eagerly and logs why. Noise then comes from the device generator, not the host's.",
    )

    @model_validator(mode="after")
    def _one_step_compiler(self) -> TrainConfig:
        if self.compile and self.cuda_graph:
            raise ValueError("compile and cuda_graph exclude each other: choose one way to cut the launch overhead")
        return self


class RunConfig(BaseModel):
    """Everything that defines one training run: data, model, objective and optimisation."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no true -> 1, no "3" -> 3

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class FitResult:
    """A trained model, its per-epoch history and its final held-out metrics (validation and test).

    `train_seconds` is the wall time of the epoch loop, per-epoch evaluations included; `eval_seconds` is
    the part of it spent in those evaluations.
    """

    model: VAE
    config: RunConfig
    history: list[dict[str, float]] = field(default_factory=list)
    validation: HeldOutMetrics | None = None
    test: HeldOutMetrics | None = None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU; anything else as given (and checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available")
    return device


def fit(
    config: RunConfig,
    callback: EpochCallback | None = None,
    data: DataSplits | None = None,
    resume_from: Path | None = None,
    checkpoint_path: Path | None = None,
) -> FitResult:
    """Train a VAE as `config` says; `callback(epoch, metrics)` after each evaluated epoch may return True to stop.

    With `checkpoint_path`, a checkpoint is written before each callback (so the callback can hand it on);
    `resume_from` continues from such a checkpoint at the epoch after the one it recorded.
    """
    device = resolve_device(config.train.device)
    torch.manual_seed(config.train.seed)
    splits = data or load_data(config.data)
    check_splits(splits, config.model)
    splits = check_split_sizes(splits.to(device))
    model = build_model(config.model, splits.input_dim, splits.image_shape).to(device)
    if config.model.standardize:  # stored as buffers: saved, restored and undone by the model itself
        model.likelihood.fit_standardization(splits.train)
    # The fused kernel does the same Adam update in one pass over all parameters instead of ~10 ops per tensor.
    fused = device.type in ("cpu", "cuda")
    graphed = config.train.cuda_graph and device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate, fused=fused, capturable=graphed)
    start_epoch, step = 0, 0
    if resume_from is not None:
        state = _read_checkpoint(resume_from)
        model.load_state_dict(state["model"])
        if state["optimizer"]:
            optimizer.load_state_dict(state["optimizer"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
    step_fn = torch.compile(model) if config.train.compile else model
    generator = torch.Generator(device=device)
    result = FitResult(model=model, config=config)
    n = splits.train.shape[0]
    batch_size = min(config.train.batch_size, n)
    steps_per_epoch = n // batch_size
    objective = config.objective.for_run(config.train.epochs * steps_per_epoch)
    threshold = config.train.collapse_rate_threshold
    graph_step = None
    if config.train.cuda_graph:
        graph_step = _graphed_fit_step(
            model, optimizer, objective, config, (batch_size, splits.input_dim), device, step
        )
    started = time.perf_counter()
    for epoch in range(start_epoch + 1, config.train.epochs + 1):
        # Seeding per epoch makes a resumed run take exactly the batches and noise of an uninterrupted one.
        epoch_seed = _epoch_seed(config.train.seed, epoch)
        generator.manual_seed(epoch_seed)
        torch.manual_seed(epoch_seed)
        model.train()
        order = torch.randperm(n, device=device, generator=generator)
        losses = torch.empty(steps_per_epoch, device=device)
        for index in range(steps_per_epoch):
            batch = splits.train.index_select(0, order[index * batch_size : (index + 1) * batch_size])
            if splits.dynamic:
                batch = binarize(batch, generator)
            if graph_step is not None:
                losses[index] = graph_step(batch)
                continue
            log_likelihood, mu, logvar = step_fn(batch)
            loss = training_loss(objective, -log_likelihood, gaussian_kl(mu, logvar), step + index)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            optimizer.step()
            # Losses stay on the device until the epoch ends: no host sync inside the loop.
            losses[index] = loss.detach()
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad_step = step + int((~finite).nonzero()[0, 0])
            raise TrainingDivergedError(divergence_message(config, epoch, bad_step))
        step += steps_per_epoch
        train_loss = float(losses.mean())
        if epoch % config.train.eval_every and epoch != config.train.epochs:
            continue
        evaluation_started = time.perf_counter()
        held_out = evaluate(
            model, splits.validation, seed=config.train.seed, collapse_rate_threshold=threshold
        ).as_dict()
        result.eval_seconds += time.perf_counter() - evaluation_started
        record = {"epoch": float(epoch), "step": float(step), "train_loss": train_loss, **held_out}
        record["train_seconds"] = time.perf_counter() - started
        result.history.append(record)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, config, optimizer, epoch=epoch, step=step)
        if callback is not None and callback(epoch, record):
            result.stopped_early = epoch < config.train.epochs
            break
    result.train_seconds = time.perf_counter() - started
    final = {"iwae_samples": config.train.iwae_samples, "seed": config.train.seed, "collapse_rate_threshold": threshold}
    result.validation = evaluate(model, splits.validation, **final)
    result.test = evaluate(model, splits.test, **final)
    result.model = model
    return result


def _graphed_fit_step(
    model: VAE,
    optimizer: torch.optim.Optimizer,
    objective: ObjectiveConfig,
    config: RunConfig,
    batch_shape: tuple[int, int],
    device: torch.device,
    first_step: int,
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """fit's step (forward, loss, backward, clip, Adam) over static buffers, captured in a CUDA graph; None, with
    the reason logged, where graphs are unavailable: fit then runs its plain eager loop."""
    reason = graph_unavailable_reason(device)
    if reason is not None:
        logger.warning("train.cuda_graph: %s; training eagerly", reason)
        return None
    static_batch = torch.zeros(batch_shape, device=device)
    static_loss = torch.zeros((), device=device)
    step_count = torch.full((), float(first_step), device=device)
    parameters = list(model.parameters())

    def step() -> None:
        log_likelihood, mu, logvar = model(static_batch)
        loss = training_loss(objective, -log_likelihood, gaussian_kl(mu, logvar), step_count)
        # autograd.grad writes fresh gradients each step: no zeroing inside the graph, no accumulation.
        for parameter, gradient in zip(parameters, torch.autograd.grad(loss, parameters), strict=True):
            parameter.grad = gradient
        if config.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, config.train.grad_clip)
        optimizer.step()
        static_loss.copy_(loss.detach())
        step_count.add_(1.0)

    graphed = GraphedStep(step, device)

    def run(batch: torch.Tensor) -> torch.Tensor:
        static_batch.copy_(batch)
        graphed()
        return static_loss

    return run


def check_split_sizes(splits: DataSplits) -> DataSplits:
    """`splits` when they can train and evaluate a model, else a ValueError naming the sizes."""
    if splits.train.shape[0] < 1 or splits.validation.shape[0] < 2 or splits.test.shape[0] < 2:
        raise ValueError(
            f"data splits need >= 1 training and >= 2 validation and test examples, got "
            f"{splits.train.shape[0]}, {splits.validation.shape[0]}, {splits.test.shape[0]}"
        )
    return splits


def divergence_message(config: RunConfig, epoch: int, step: int) -> str:
    """What a run whose training loss became NaN/inf at `epoch`, `step` reports (a fit's error, a member's)."""
    return (
        f"non-finite training loss at epoch {epoch}, step {step}; objective {config.objective.kind}, learning rate "
        f"{config.train.learning_rate}: lower the learning rate, set train.grad_clip or check the data for NaN/inf"
    )


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def save_checkpoint(
    path: Path,
    model: VAE,
    config: RunConfig,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int = 0,
    step: int = 0,
) -> Path:
    """Write model weights, optimiser state and the run config (as JSON text) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "config": config.model_dump_json(),
        "input_dim": model.input_dim,
        "image_shape": list(model.image_shape),
        "epoch": epoch,
        "step": step,
    }
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, temporary)
    temporary.replace(path)
    return path


def _read_checkpoint(path: Path) -> dict:
    try:
        # weights_only=True: a checkpoint is data, never code to unpickle.
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"checkpoint {path}: refused, not a weights-only checkpoint (pickled objects, or a corrupt file)"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path}: expected a dict of tensors, got {type(state).__name__}")
    missing = {"model", "optimizer", "config", "input_dim", "image_shape", "epoch", "step"} - set(state)
    if missing:
        raise ValueError(f"checkpoint {path}: missing {sorted(missing)}")
    return state


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[VAE, RunConfig]:
    """Rebuild the model and its run config from a checkpoint written by `save_checkpoint`."""
    state = _read_checkpoint(path)
    config = RunConfig.model_validate(json.loads(state["config"]))
    model = build_model(config.model, int(state["input_dim"]), tuple(state["image_shape"]))
    model.load_state_dict(state["model"])
    return model.to(device), config
