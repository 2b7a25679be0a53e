"""Training objectives: ELBO, beta-VAE (Higgins et al. 2017) and capacity (Burgess et al. 2018)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


class ObjectiveConfig(BaseModel):
    """Loss to minimise per example: D + beta*R (`beta`, `elbo` with beta=1) or D + gamma*|R - C_t| (`capacity`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no true -> 1, no "3" -> 3

    kind: Literal["elbo", "beta", "capacity"] = "elbo"
    beta: float = Field(1.0, gt=0.0, le=1e4, description="Weight of the rate in D + beta*R.")
    capacity: float = Field(0.0, ge=0.0, le=1e4, description="Target rate C in nats for `capacity`.")
    gamma: float = Field(100.0, gt=0.0, le=1e5, description="Weight of |R - C| for `capacity`.")
    capacity_anneal_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="C_t rises linearly from 0 to `capacity` over this fraction of the run."
    )
    capacity_anneal_steps: int | None = Field(
        None, ge=0, description="The ramp in optimiser steps instead of the fraction; refused if the run is shorter."
    )
    free_bits: float = Field(0.0, ge=0.0, description="Per-dimension KL floor in nats (Kingma et al. 2016).")
    kl_warmup_steps: int = Field(0, ge=0, description="Rate weight rises linearly from 0 over these steps.")

    @model_validator(mode="after")
    def _elbo_is_beta_one(self) -> ObjectiveConfig:
        if self.kind == "elbo" and self.beta != 1.0:
            raise ValueError("objective 'elbo' has beta = 1; use kind 'beta' to weight the rate")
        return self

    def ramp_steps(self, total_steps: int) -> int:
        """Optimiser steps of the C_t ramp in a run of `total_steps`: the explicit steps, else the fraction."""
        if self.capacity_anneal_steps is not None:
            return self.capacity_anneal_steps
        return math.ceil(self.capacity_anneal_fraction * total_steps)

    def for_run(self, total_steps: int) -> ObjectiveConfig:
        """This objective with its ramp fixed in steps for a run of `total_steps`; refuses a ramp that cannot end.

        Raises ValueError naming `capacity_anneal_steps` when C_t would not reach C before the last step.
        """
        steps = self.ramp_steps(total_steps)
        if self.kind == "capacity" and steps > total_steps:
            raise ValueError(
                f"capacity_anneal_steps {steps} exceeds the run's {total_steps} optimiser steps: C_t would end at "
                f"{total_steps / steps:.0%} of C = {self.capacity:g} nats; use capacity_anneal_fraction or fewer steps"
            )
        return self.model_copy(update={"capacity_anneal_steps": steps})

    def capacity_at(self, step: int) -> float:
        """Annealed capacity C_t in nats at optimiser `step` (the ramp in steps must be fixed: see `for_run`)."""
        if self.capacity_anneal_steps is None:
            raise ValueError("capacity_at: the ramp is a fraction of the run; fix it with for_run(total_steps)")
        if self.capacity_anneal_steps == 0:
            return self.capacity
        return self.capacity * min(1.0, step / self.capacity_anneal_steps)

    def warmup_at(self, step: int) -> float:
        """Rate weight multiplier in [0, 1] for KL warm-up at optimiser `step`."""
        return 1.0 if self.kl_warmup_steps == 0 else min(1.0, step / self.kl_warmup_steps)

    def loss_numbers(self) -> dict[str, float]:
        """The numbers `scheduled_loss` takes: rate and |R - C_t| weights (before warm-up), C and the schedules.

        A capacity objective needs its ramp fixed in steps first (`for_run`); the others ignore the ramp."""
        capacity = self.kind == "capacity"
        if capacity and self.capacity_anneal_steps is None:
            raise ValueError("loss_numbers: the ramp is a fraction of the run; fix it with for_run(total_steps)")
        return {
            "rate_weight": 0.0 if capacity else (1.0 if self.kind == "elbo" else self.beta),
            "capacity_weight": self.gamma if capacity else 0.0,
            "capacity": self.capacity,
            "capacity_anneal_steps": float(self.capacity_anneal_steps or 0),
            "kl_warmup_steps": float(self.kl_warmup_steps),
            "free_bits": self.free_bits,
        }


Number = float | torch.Tensor


def linear_ramp(step: int | torch.Tensor, steps: float | torch.Tensor) -> Number:
    """min(1, step / steps), and 1 when `steps` is 0. On tensors it is elementwise and never syncs with the host
    (nor copies to the device, so it may run inside a CUDA graph)."""
    if isinstance(steps, torch.Tensor):
        return torch.where(steps > 0, (step / steps.clamp(min=1)).clamp(max=1.0), 1.0)
    if steps == 0:
        return 1.0
    if isinstance(step, torch.Tensor):
        return (step / steps).clamp(max=1.0)
    return min(1.0, step / steps)


def _is_zero(value: Number) -> bool:
    return not isinstance(value, torch.Tensor) and value == 0.0


def weighted_loss(
    distortion: torch.Tensor,
    kl_per_dim: torch.Tensor,
    rate_weight: Number,
    capacity_weight: Number = 0.0,
    capacity_target: Number = 0.0,
    free_bits: Number = 0.0,
) -> torch.Tensor:
    """D + rate_weight * R + capacity_weight * |R - capacity_target|, every objective's loss. distortion: [B],
    kl_per_dim: [B, Z]. The weights are floats, or 0-d tensors (one cohort member's, under vmap); float zeros
    drop their term, so `fit` pays for no term its objective lacks."""
    # Free bits act on the batch-mean KL of each dimension, as in Kingma et al. (2016).
    if _is_zero(free_bits):
        rate = kl_per_dim.sum(-1).mean()
    elif isinstance(free_bits, torch.Tensor):
        rate = torch.maximum(kl_per_dim.mean(0), free_bits).sum()
    else:
        rate = kl_per_dim.mean(0).clamp(min=free_bits).sum()
    loss = distortion.mean()
    if not _is_zero(rate_weight):
        loss = loss + rate_weight * rate
    if not _is_zero(capacity_weight):
        loss = loss + capacity_weight * (rate - capacity_target).abs()
    return loss


def scheduled_loss(
    numbers: Mapping[str, Number], distortion: torch.Tensor, kl_per_dim: torch.Tensor, step: int | torch.Tensor
) -> torch.Tensor:
    """The loss at optimiser `step` of the objective given by `numbers` (`ObjectiveConfig.loss_numbers()`: floats,
    or one cohort member's 0-d tensors under vmap): warm-up and capacity annealing applied, then `weighted_loss`."""
    warmup = linear_ramp(step, numbers["kl_warmup_steps"])
    rate_weight, capacity_weight = numbers["rate_weight"], numbers["capacity_weight"]
    return weighted_loss(
        distortion,
        kl_per_dim,
        rate_weight=0.0 if _is_zero(rate_weight) else warmup * rate_weight,
        capacity_weight=0.0 if _is_zero(capacity_weight) else warmup * capacity_weight,
        capacity_target=numbers["capacity"] * linear_ramp(step, numbers["capacity_anneal_steps"]),
        free_bits=numbers["free_bits"],
    )


def training_loss(
    config: ObjectiveConfig, distortion: torch.Tensor, kl_per_dim: torch.Tensor, step: int | torch.Tensor
) -> torch.Tensor:
    """Scalar loss. distortion: [B] (-log p(x|z)), kl_per_dim: [B, Z] (analytic KL per latent dimension).

    `step` is the optimiser step: an int, or a 0-d device tensor inside a CUDA graph (the schedules then stay on
    the device)."""
    return scheduled_loss(config.loss_numbers(), distortion, kl_per_dim, step)
