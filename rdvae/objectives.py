"""Training objectives: ELBO, beta-VAE (Higgins et al. 2017) and capacity (Burgess et al. 2018)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator


class ObjectiveConfig(BaseModel):
    """Loss to minimise per example: D + beta*R (`beta`, `elbo` with beta=1) or D + gamma*|R - C_t| (`capacity`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


def training_loss(
    config: ObjectiveConfig, distortion: torch.Tensor, kl_per_dim: torch.Tensor, step: int
) -> torch.Tensor:
    """Scalar loss. distortion: [B] (-log p(x|z)), kl_per_dim: [B, Z] (analytic KL per latent dimension)."""
    # Free bits act on the batch-mean KL of each dimension, as in Kingma et al. (2016).
    rate = kl_per_dim.mean(0).clamp(min=config.free_bits).sum() if config.free_bits > 0.0 else kl_per_dim.sum(-1).mean()
    distortion_mean = distortion.mean()
    warmup = config.warmup_at(step)
    if config.kind == "capacity":
        return distortion_mean + warmup * config.gamma * (rate - config.capacity_at(step)).abs()
    beta = 1.0 if config.kind == "elbo" else config.beta
    return distortion_mean + warmup * beta * rate
