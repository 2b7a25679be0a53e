"""Cohort training: K runs sharing data and architecture trained as one stacked program, each still its own `fit`.

Every member gets what `fit` gives a run — the same initialisation, batch order and noise (on CPU the same draws),
the held-out metrics of `rdvae.evaluate.evaluate` on its own unstacked model, a checkpoint `fit` can resume, its
own early stop (the callback) and its own failure (a NaN ends that member only). Finished members leave the
stacked program, so a stopped member stops changing and the others run on a smaller cohort.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch

from rdvae._cohort_program import StackedCohort
from rdvae._graphs import graph_unavailable_reason
from rdvae.data import DataSplits, load_data
from rdvae.datacheck import check_splits
from rdvae.evaluate import HeldOutMetrics, PerExample, evaluate
from rdvae.models import build_model
from rdvae.train import (
    FitResult,
    RunConfig,
    check_split_sizes,
    divergence_message,
    resolve_device,
    save_checkpoint,
)

logger = logging.getLogger("rdvae")

MemberStatus = Literal["completed", "stopped", "failed"]
CohortCallback = Callable[[int, int, dict[str, float]], "bool | None"]
COHORT_CHECKPOINT = "cohort.pt"

# What members of one cohort must share; they may differ in everything else: the objective (beta, C, gamma,
# annealing, warm-up, free bits), the learning rate, the seed, the epochs and the gradient clip.
SHARED_FIELDS = (
    "data",
    "model",
    "train.batch_size",
    "train.device",
    "train.eval_every",
    "train.iwae_samples",
    "train.compile",
    "train.cuda_graph",
)


@dataclass
class MemberResult(FitResult):
    """One member's `FitResult`, with how it ended: completed, stopped (its callback said so) or failed (NaN/inf
    training loss; `error` says where, and it has no final metrics)."""

    status: MemberStatus = "completed"
    error: str | None = None


@dataclass
class CohortResult:
    """Every member's result, in the order of the configs; `graph_reason` says why the step ran eagerly although
    `train.cuda_graph` asked for a graph (None otherwise). `train_seconds` is the wall time of the epoch loop,
    `eval_seconds` the part of it spent evaluating members (per-epoch and final held-out metrics)."""

    members: list[MemberResult] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    graphed: bool = False
    graph_reason: str | None = None


def _field(config: RunConfig, dotted: str) -> Any:
    value: Any = config
    for name in dotted.split("."):
        value = getattr(value, name)
    return value


def check_cohort(configs: Sequence[RunConfig]) -> None:
    """Raise ValueError naming the member and the field when `configs` cannot train as one cohort."""
    if not configs:
        raise ValueError("a cohort needs at least one run config")
    for index, config in enumerate(configs[1:], start=1):
        for name in SHARED_FIELDS:
            first, other = _field(configs[0], name), _field(config, name)
            if first != other:
                raise ValueError(
                    f"cohort member {index} differs from member 0 in {name} ({other!r} vs {first!r}); members "
                    f"share {', '.join(SHARED_FIELDS)}: group the runs with split_into_cohorts"
                )


def cohort_key(config: RunConfig) -> str:
    """Runs with equal keys can share a cohort (JSON of the shared fields)."""
    shared = {}
    for name in SHARED_FIELDS:
        value = _field(config, name)
        shared[name] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
    return json.dumps(shared, sort_keys=True)


def split_into_cohorts(configs: Sequence[RunConfig], max_size: int) -> list[list[int]]:
    """Indices of `configs` grouped into cohorts of at most `max_size` runs that share data and architecture,
    in order of first appearance."""
    if max_size < 1:
        raise ValueError(f"max_size must be >= 1, got {max_size}")
    groups: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(cohort_key(config), []).append(index)
    return [group[start : start + max_size] for group in groups.values() for start in range(0, len(group), max_size)]


def fit_cohort(
    configs: Sequence[RunConfig],
    callback: CohortCallback | None = None,
    data: DataSplits | None = None,
    resume_from: Path | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_seconds: float = 0.0,
) -> CohortResult:
    """Train `configs` as one cohort. `callback(member, epoch, record)` after each of a member's evaluated epochs
    may return True to stop that member (its record is what `fit` hands its callback).

    With `checkpoint_dir`, each evaluated member's checkpoint (`member-0003.pt`, the format of
    `rdvae.save_checkpoint`) is written before its callback and the cohort's (`cohort.pt`) after each evaluated
    epoch; `resume_from` (a `cohort.pt`) continues every member where it was, finished members kept as they ended.
    `checkpoint_seconds` > 0 writes them at most that often (a large cohort's checkpoints cost more than its epoch),
    and always when a member finishes: its own checkpoint and the cohort's.
    """
    configs = list(configs)
    check_cohort(configs)
    first = configs[0]
    device = resolve_device(first.train.device)
    splits = data or load_data(first.data)
    check_splits(splits, first.model)
    splits = check_split_sizes(splits.to(device))
    reason = graph_unavailable_reason(device) if first.train.cuda_graph else None
    if reason is not None:
        logger.warning("train.cuda_graph: %s; the cohort trains eagerly", reason)
    if first.train.compile:
        logger.warning("train.compile: a cohort runs its vmapped step uncompiled")
    cohort = StackedCohort(configs, splits, device, use_graph=first.train.cuda_graph and reason is None)
    members = [MemberResult(model=cohort.template, config=config) for config in configs]
    start_epoch = 0
    if resume_from is not None:
        start_epoch = _resume(Path(resume_from), configs, cohort, members, splits)
    started = time.perf_counter()
    last_written = -float("inf")
    eval_seconds = 0.0
    for epoch in range(start_epoch + 1, max(config.train.epochs for config in configs) + 1):
        if not cohort.rows:
            break
        losses = cohort.train_epoch(epoch).cpu()  # the epoch's one host sync
        finished: list[int] = []
        evaluated = False
        due = checkpoint_dir is not None and time.perf_counter() - last_written >= checkpoint_seconds
        for row, member in enumerate(cohort.rows):
            config, result = configs[member], members[member]
            finite = torch.isfinite(losses[row])
            if not bool(finite.all()):
                bad_step = cohort.step - cohort.steps_per_epoch + int((~finite).nonzero()[0, 0])
                result.status, result.error = "failed", divergence_message(config, epoch, bad_step)
                finished.append(row)
                continue
            if epoch % config.train.eval_every and epoch != config.train.epochs:
                continue
            evaluated = True
            model = cohort.member_model(row)
            evaluation_started = time.perf_counter()
            threshold = config.train.collapse_rate_threshold
            held_out = evaluate(
                model, splits.validation, seed=config.train.seed, collapse_rate_threshold=threshold
            ).as_dict()
            result.eval_seconds += time.perf_counter() - evaluation_started
            eval_seconds += time.perf_counter() - evaluation_started
            record = {"epoch": float(epoch), "step": float(cohort.step), "train_loss": float(losses[row].mean())}
            record.update(held_out)
            record["train_seconds"] = time.perf_counter() - started
            result.history.append(record)
            if due:
                assert checkpoint_dir is not None
                _write_member_checkpoint(Path(checkpoint_dir), member, cohort, row, epoch)
            stop = callback is not None and bool(callback(member, epoch, record))
            if stop or epoch == config.train.epochs:
                if checkpoint_dir is not None and not due:  # a finishing member's checkpoint is its final state
                    _write_member_checkpoint(Path(checkpoint_dir), member, cohort, row, epoch)
                result.stopped_early = epoch < config.train.epochs
                result.status = "stopped" if result.stopped_early else "completed"
                finished.append(row)
        for row in finished:
            finishing_started = time.perf_counter()
            _finish(cohort, row, members[cohort.rows[row]], splits, finishing_started - started)
            eval_seconds += time.perf_counter() - finishing_started
        if finished:
            cohort.keep([row for row in range(len(cohort.rows)) if row not in finished])
        if checkpoint_dir is not None and ((evaluated and due) or finished):
            _write_cohort_checkpoint(Path(checkpoint_dir) / COHORT_CHECKPOINT, configs, cohort, members, epoch)
            last_written = time.perf_counter()
    graph_reason = cohort.graph_reason if first.train.cuda_graph and reason is None else reason
    return CohortResult(
        members=members,
        train_seconds=time.perf_counter() - started,
        eval_seconds=eval_seconds,
        graphed=first.train.cuda_graph and graph_reason is None,
        graph_reason=graph_reason,
    )


def _write_member_checkpoint(directory: Path, member: int, cohort: StackedCohort, row: int, epoch: int) -> None:
    path = directory / member_checkpoint_name(member)
    model, optimizer = cohort.member_model(row), cohort.member_optimizer(row)
    save_checkpoint(path, model, cohort.configs[member], optimizer, epoch=epoch, step=cohort.step)


def member_checkpoint_name(member: int) -> str:
    """File name of member `member`'s checkpoint inside a cohort's checkpoint directory."""
    return f"member-{member:04d}.pt"


def _finish(cohort: StackedCohort, row: int, result: MemberResult, splits: DataSplits, seconds: float) -> None:
    # The final metrics of `fit`: validation and test, with the IWAE bound, on the member's own model.
    config = result.config
    result.model = copy.deepcopy(cohort.member_model(row))
    result.train_seconds = seconds
    if result.status == "failed":
        return
    final = {
        "iwae_samples": config.train.iwae_samples,
        "seed": config.train.seed,
        "collapse_rate_threshold": config.train.collapse_rate_threshold,
    }
    result.validation = evaluate(result.model, splits.validation, **final)
    result.test = evaluate(result.model, splits.test, **final)


def _metrics_record(metrics: HeldOutMetrics | None) -> dict[str, Any] | None:
    # JSON-able fields; the per-example bounds (tensors) travel beside them in the checkpoint.
    if metrics is None:
        return None
    return {item.name: getattr(metrics, item.name) for item in fields(metrics) if item.name != "per_example"}


def _per_example_record(metrics: HeldOutMetrics | None) -> dict[str, torch.Tensor | None] | None:
    if metrics is None or metrics.per_example is None:
        return None
    return {"elbo": metrics.per_example.elbo, "iwae": metrics.per_example.iwae}


def _metrics_from(record: dict[str, Any] | None, per_example: dict | None) -> HeldOutMetrics | None:
    if record is None:
        return None
    examples = None if per_example is None else PerExample(elbo=per_example["elbo"], iwae=per_example["iwae"])
    return HeldOutMetrics(**record, per_example=examples)


def _member_record(result: MemberResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "error": result.error,
        "history": result.history,
        "validation": _metrics_record(result.validation),
        "test": _metrics_record(result.test),
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        "stopped_early": result.stopped_early,
    }


def _write_cohort_checkpoint(
    path: Path, configs: list[RunConfig], cohort: StackedCohort, members: list[MemberResult], epoch: int
) -> None:
    running = set(cohort.rows)
    state = {
        "configs": json.dumps([config.model_dump(mode="json") for config in configs]),
        "epoch": epoch,
        "stacked": cohort.state_dict(),
        "members": json.dumps([_member_record(result) for result in members]),
        # Finished members' final weights: they are no longer rows of the stacked state.
        "finished": {
            str(member): result.model.state_dict() for member, result in enumerate(members) if member not in running
        },
        "per_example": {
            str(member): {
                "validation": _per_example_record(result.validation),
                "test": _per_example_record(result.test),
            }
            for member, result in enumerate(members)
            if member not in running
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def _resume(
    path: Path, configs: list[RunConfig], cohort: StackedCohort, members: list[MemberResult], splits: DataSplits
) -> int:
    try:
        state = torch.load(path, map_location=cohort.device, weights_only=True)
        saved = json.loads(state["configs"])
        records = json.loads(state["members"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as error:
        raise ValueError(f"cohort checkpoint {path}: unreadable ({error})") from error
    if saved != [config.model_dump(mode="json") for config in configs]:
        raise ValueError(f"cohort checkpoint {path}: written for other run configs than the ones given")
    cohort.load_state_dict(state["stacked"])
    for member, (result, record) in enumerate(zip(members, records, strict=True)):
        result.history = record["history"]
        result.eval_seconds = record["eval_seconds"]
        if member in cohort.rows:
            continue
        result.status, result.error = record["status"], record["error"]
        result.train_seconds, result.stopped_early = record["train_seconds"], record["stopped_early"]
        per_example = state["per_example"][str(member)]
        result.validation = _metrics_from(record["validation"], per_example["validation"])
        result.test = _metrics_from(record["test"], per_example["test"])
        model = build_model(result.config.model, splits.input_dim, splits.image_shape).to(cohort.device)
        model.load_state_dict(state["finished"][str(member)])
        result.model = model
    return int(state["epoch"])
