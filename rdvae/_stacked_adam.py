"""Adam over stacked parameters [K, ...]: one learning rate, step count and gradient clip per cohort member."""

from __future__ import annotations

import torch

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which `fit` uses
EPS = 1e-8


class StackedAdam:
    """torch.optim.Adam's update (Kingma & Ba 2015, PyTorch's formula) applied to K members at once.

    Adam is elementwise, so stacking its state is exact; only the learning rate, the bias corrections (per-member
    step counts) and the gradient-norm clip need a value per member. Every operation is a tensor operation on
    the parameters' device: the step never syncs with the host, so it can be captured in a CUDA graph.
    """

    def __init__(
        self,
        params: list[torch.Tensor],
        learning_rates: torch.Tensor,
        grad_clips: torch.Tensor | None = None,
    ) -> None:
        """params: [K, ...] each; learning_rates: [K]; grad_clips: [K] max gradient norms (inf: no clip)."""
        self.params = params
        self.learning_rates = learning_rates
        self.grad_clips = grad_clips
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(learning_rates.shape[0], device=learning_rates.device)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        """One update of every member from its gradients (grads: [K, ...] like params)."""
        beta1, beta2 = BETAS
        if self.grad_clips is not None:
            grads = self._clipped(grads)
        self.steps.add_(1.0)
        bias_correction1 = 1.0 - torch.pow(beta1, self.steps)
        bias_correction2_sqrt = (1.0 - torch.pow(beta2, self.steps)).sqrt()
        step_size = self.learning_rates / bias_correction1
        for param, grad, exp_avg, exp_avg_sq in zip(self.params, grads, self.exp_avg, self.exp_avg_sq, strict=True):
            exp_avg.lerp_(grad, 1.0 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            shape = (-1,) + (1,) * (param.dim() - 1)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt.view(shape)).add_(EPS)
            param.sub_(exp_avg / denom * step_size.view(shape))

    def _clipped(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        # torch.nn.utils.clip_grad_norm_ per member: scale by min(1, max_norm / (total_norm + 1e-6)).
        assert self.grad_clips is not None
        squares = torch.stack([grad.flatten(1).pow(2).sum(1) for grad in grads]).sum(0)
        scale = (self.grad_clips / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        return [grad * scale.view((-1,) + (1,) * (grad.dim() - 1)) for grad in grads]

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the members at `rows`, parameters included (a cohort compacted after some members finished)."""
        self.params = [param.detach()[rows].requires_grad_() for param in self.params]
        self.learning_rates = self.learning_rates[rows]
        self.grad_clips = None if self.grad_clips is None else self.grad_clips[rows]
        self.exp_avg = [state[rows] for state in self.exp_avg]
        self.exp_avg_sq = [state[rows] for state in self.exp_avg_sq]
        self.steps = self.steps[rows]

    def member_state(self, row: int) -> dict[str, list[torch.Tensor] | torch.Tensor]:
        """One member's moments and step count (views into the stacked state)."""
        return {
            "exp_avg": [state[row] for state in self.exp_avg],
            "exp_avg_sq": [state[row] for state in self.exp_avg_sq],
            "step": self.steps[row],
        }
