"""Adam over flat stacked parameters [K, P]: one learning rate, step count and gradient clip per cohort member."""

from __future__ import annotations

import torch

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which `fit` uses
EPS = 1e-8


class StackedAdam:
    """torch.optim.Adam's update (Kingma & Ba 2015, PyTorch's formula) applied to K members at once.

    Each member's parameters are one row of a flat [K, P] tensor, so an update is a handful of whole-tensor
    operations whatever the architecture. Adam is elementwise, so stacking its state is exact; only the learning
    rate, the bias corrections (per-member step counts) and the gradient-norm clip need a value per member. No
    operation syncs with the host: the step can be captured in a CUDA graph.
    """

    def __init__(self, params: torch.Tensor, learning_rates: torch.Tensor, grad_clips: torch.Tensor | None) -> None:
        """params: [K, P] (a leaf that requires grad); learning_rates: [K]; grad_clips: [K] max norms (inf: none)."""
        self.params = params
        self.learning_rates = learning_rates
        self.grad_clips = grad_clips
        self.exp_avg = torch.zeros_like(params, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(params, requires_grad=False)
        self.steps = torch.zeros(params.shape[0], device=params.device)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """One update of every member from its gradient (grad: [K, P])."""
        beta1, beta2 = BETAS
        if self.grad_clips is not None:
            # torch.nn.utils.clip_grad_norm_ per member: scale by min(1, max_norm / (total_norm + 1e-6)).
            grad = grad * (self.grad_clips / (grad.norm(dim=1) + 1e-6)).clamp(max=1.0)[:, None]
        self.steps.add_(1.0)
        bias_correction1 = 1.0 - torch.pow(beta1, self.steps)
        bias_correction2_sqrt = (1.0 - torch.pow(beta2, self.steps)).sqrt()
        self.exp_avg.lerp_(grad, 1.0 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = self.exp_avg_sq.sqrt().div_(bias_correction2_sqrt[:, None]).add_(EPS)
        # p -= (lr / bc1) * m / denom, written as p -= m / (denom * bc1 / lr) to save a pass over [K, P].
        self.params.addcdiv_(self.exp_avg, denom.mul_((bias_correction1 / self.learning_rates)[:, None]), value=-1.0)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the members at `rows`, parameters included (a cohort compacted after some members finished)."""
        self.params = self.params.detach()[rows].requires_grad_()
        self.learning_rates = self.learning_rates[rows]
        self.grad_clips = None if self.grad_clips is None else self.grad_clips[rows]
        self.exp_avg = self.exp_avg[rows]
        self.exp_avg_sq = self.exp_avg_sq[rows]
        self.steps = self.steps[rows]
