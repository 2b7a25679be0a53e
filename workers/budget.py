"""A trial's training budget: optimiser steps, the capacity ramp, and the epoch before which nothing may judge it."""

from __future__ import annotations

import math

from rdvae.data import example_count, split_sizes
from rdvae.objectives import ObjectiveConfig
from workers.spec import SpecError, SweepSpec


class SpecFieldError(SpecError):
    """A spec that validates but cannot run as asked; `field` is the offending path (`search_space.C`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def train_examples(spec: SweepSpec) -> int | None:
    """Training-split size of a built-in data set, without loading it; None for `file` data."""
    examples = example_count(spec.dataset)
    return None if examples is None else split_sizes(spec.dataset, examples)[0]


def steps_per_epoch(spec: SweepSpec, n_train: int) -> int:
    """Optimiser steps per epoch, as `rdvae.fit` takes them (full batches only)."""
    return n_train // min(spec.batch_size, n_train)


def capacity_ramp(spec: SweepSpec) -> ObjectiveConfig:
    """The capacity objective's ramp settings of the spec (C itself is per trial)."""
    space = spec.search_space
    return ObjectiveConfig(
        kind="capacity",
        gamma=space.gamma,
        capacity_anneal_fraction=space.capacity_anneal_fraction,
        capacity_anneal_steps=space.capacity_anneal_steps,
    )


def anneal_end_epoch(spec: SweepSpec, n_train: int) -> int:
    """First epoch at whose end C_t = C for capacity trials (0 when the spec searches no capacity objective)."""
    if "capacity" not in spec.search_space.objective:
        return 0
    per_epoch = steps_per_epoch(spec, n_train)
    return math.ceil(capacity_ramp(spec).ramp_steps(spec.epochs * per_epoch) / per_epoch)


def check_budget(spec: SweepSpec, n_train: int | None = None) -> None:
    """Refuse a capacity ramp that cannot reach C before the last epoch (SpecFieldError naming the field).

    `n_train` defaults to the built-in data set's training split; for `file` data unknown here the check waits for
    the trial, where `rdvae.fit` refuses the same run.
    """
    space = spec.search_space
    if "capacity" not in space.objective or space.capacity_anneal_steps is None:
        return
    n_train = n_train if n_train is not None else train_examples(spec)
    if n_train is None:
        return
    per_epoch = steps_per_epoch(spec, n_train)
    try:
        capacity_ramp(spec).for_run(spec.epochs * per_epoch)
    except ValueError as error:
        raise SpecFieldError(
            "search_space.capacity_anneal_steps", f"{error} ({spec.epochs} epochs of {per_epoch} steps)"
        ) from error
