"""Adam over flat stacked parameters [K, P]: one learning rate, step count and gradient clip per cohort member."""

from __future__ import annotations

import torch
from torch.optim.adam import adam

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which `fit` uses
EPS = 1e-8


class StackedAdam:
    """torch.optim.Adam, fused as `fit` runs it, over K members whose parameters are the rows of a flat [K, P].

    Adam is elementwise, so each member's row is updated exactly as its own optimiser would update it: the rows
    go to PyTorch's fused Adam kernel as a list, one call per distinct learning rate (one call for a sweep that
    does not search the learning rate). Step counts are per member; the gradient-norm clip is per member. Nothing
    syncs with the host, so the step can be captured in a CUDA graph.
    """

    def __init__(self, params: torch.Tensor, learning_rates: list[float], grad_clips: torch.Tensor | None) -> None:
        """params: [K, P] (a leaf that requires grad); learning_rates: K floats; grad_clips: [K] max norms (inf:
        none) or None when no member clips."""
        self.params = params
        self.learning_rates = list(learning_rates)
        self.grad_clips = grad_clips
        self.exp_avg = torch.zeros_like(params, requires_grad=False)
        self.exp_avg_sq = torch.zeros_like(params, requires_grad=False)
        self.steps = torch.zeros(params.shape[0], device=params.device)
        self._fused = params.device.type in ("cpu", "cuda")
        self._row_views: tuple[tuple[torch.Tensor, ...], ...] | None = None
        self._lr_groups: dict[float, list[int]] = {}

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """One update of every member from its gradient (grad: [K, P])."""
        if self.grad_clips is not None:
            # torch.nn.utils.clip_grad_norm_ per member: scale by min(1, max_norm / (total_norm + 1e-6)).
            grad = grad * (self.grad_clips / (grad.norm(dim=1) + 1e-6)).clamp(max=1.0)[:, None]
        if self._row_views is None:
            # Per-row views of the state: made once per set of rows (thousands of views cost an eager step).
            self._row_views = tuple(t.unbind(0) for t in (self.params, self.exp_avg, self.exp_avg_sq, self.steps))
            self._lr_groups = self._groups()
        params_rows, exp_avg_rows, exp_avg_sq_rows, steps = self._row_views
        rows = (params_rows, grad.unbind(0), exp_avg_rows, exp_avg_sq_rows)
        for learning_rate, members in self._lr_groups.items():
            params, grads, exp_avgs, exp_avg_sqs = ([tensors[k] for k in members] for tensors in rows)
            adam(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                [steps[k] for k in members],
                fused=self._fused,
                foreach=False if not self._fused else None,
                amsgrad=False,
                beta1=BETAS[0],
                beta2=BETAS[1],
                lr=learning_rate,
                weight_decay=0.0,
                eps=EPS,
                maximize=False,
            )

    def _groups(self) -> dict[float, list[int]]:
        groups: dict[float, list[int]] = {}
        for row, learning_rate in enumerate(self.learning_rates):
            groups.setdefault(learning_rate, []).append(row)
        return groups

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the members at `rows`, parameters included (a cohort compacted after some members finished)."""
        self._row_views = None
        self.params = self.params.detach()[rows].requires_grad_()
        self.learning_rates = [self.learning_rates[int(row)] for row in rows]
        self.grad_clips = None if self.grad_clips is None else self.grad_clips[rows]
        self.exp_avg = self.exp_avg[rows]
        self.exp_avg_sq = self.exp_avg_sq[rows]
        self.steps = self.steps[rows]
