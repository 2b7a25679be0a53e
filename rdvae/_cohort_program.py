"""The stacked program of a cohort: one VAE definition, K members' parameters stacked and stepped under vmap."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call, stack_module_state, vmap

from rdvae._graphs import GraphedStep
from rdvae._stacked_adam import StackedAdam
from rdvae.data import DataSplits
from rdvae.metrics import gaussian_kl
from rdvae.models import VAE, build_model
from rdvae.objectives import scheduled_loss
from rdvae.train import RunConfig, _epoch_seed


class StackedCohort:
    """Parameters, Adam state and objective numbers of the running members, stacked on a leading axis of rows.

    Row r trains member `rows[r]`. The step is `vmap` over `functional_call` of one template VAE (the model
    ensembling recipe of torch.func), so every member runs exactly the module `fit` runs; the loss is the one
    `scheduled_loss` of rdvae.objectives, fed each member's own numbers.
    """

    def __init__(self, configs: list[RunConfig], splits: DataSplits, device: torch.device, use_graph: bool) -> None:
        self.configs = configs
        self.splits = splits
        self.device = device
        self.use_graph = use_graph
        first = configs[0]
        # Each member is initialised as `fit` initialises it: the global seed set to its seed, then the model built.
        models = []
        for config in configs:
            torch.manual_seed(config.train.seed)
            model = build_model(config.model, splits.input_dim, splits.image_shape).to(device)
            if config.model.standardize:  # as `fit`: the training split's per-feature mean and scale, as buffers
                model.likelihood.fit_standardization(splits.train)
            models.append(model)
        self.template: VAE = models[0]
        params, buffers = stack_module_state(models)
        # Each member's parameters are one row of a flat [K, P] tensor; `layout` cuts a row back into tensors.
        self.layout: list[tuple[str, tuple[int, ...], int, int]] = []
        offset = 0
        for name, stacked in params.items():
            numel = stacked[0].numel()
            self.layout.append((name, tuple(stacked.shape[1:]), offset, numel))
            offset += numel
        flat = torch.cat([stacked.detach().flatten(1) for stacked in params.values()], dim=1)
        # Buffers (MADE's masks) are the same in every member: passed once, not stacked.
        self.buffers = {name: buffer[0] for name, buffer in buffers.items()}
        self.rows: list[int] = list(range(len(configs)))
        self.batch_size = min(first.train.batch_size, splits.train.shape[0])
        self.steps_per_epoch = splits.train.shape[0] // self.batch_size
        self.step = 0
        clips = [config.train.grad_clip for config in configs]
        self.adam = StackedAdam(
            flat.requires_grad_(),
            [config.train.learning_rate for config in configs],
            None
            if all(clip is None for clip in clips)
            else torch.tensor([float("inf") if clip is None else clip for clip in clips], device=device),
        )
        # The capacity ramp is fixed in steps for each member's own length, as `fit` fixes it.
        numbers = [
            config.objective.for_run(config.train.epochs * self.steps_per_epoch).loss_numbers() for config in configs
        ]
        self.numbers = {key: torch.tensor([n[key] for n in numbers], device=device) for key in numbers[0]}
        self._program: _Program | None = None
        self._graph_failure: str | None = None

    @property
    def graph_reason(self) -> str | None:
        """Why the step ran eagerly although a graph was asked for (None: graphed, or not asked)."""
        self._note_graph_failure()
        return self._graph_failure

    def _note_graph_failure(self) -> None:
        # A failed capture is remembered past compactions, and later programs do not try again.
        if self._program is not None and self._program.graphed.reason is not None and self.use_graph:
            self._graph_failure = self._program.graphed.reason
            self.use_graph = False

    def train_epoch(self, epoch: int) -> torch.Tensor:
        """One epoch of every row on the batch order and noise `fit` draws for it. -> losses [rows, steps]."""
        orders, noise = self._epoch_draws(epoch)
        program = self._program_for_rows()
        losses = torch.empty(len(self.rows), self.steps_per_epoch, device=self.device)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(_epoch_seed(self.configs[0].train.seed, epoch))
        size = self.batch_size
        for index in range(self.steps_per_epoch):
            batch = self.splits.train[orders[:, index * size : (index + 1) * size]]
            if self.splits.dynamic:
                # One cohort generator: a member matches `fit` in distribution here, not sample for sample.
                batch = torch.bernoulli(batch, generator=generator)
            losses[:, index] = program.run(batch, noise[:, index])
        self.step += self.steps_per_epoch
        return losses

    def _epoch_draws(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        # fit seeds a generator (batch order) and the global RNG (noise) with the epoch seed; one draw of all the
        # epoch's noise equals fit's per-step draws on CPU (per-member streams), so a member replays its fit.
        orders, noise = [], []
        generator = torch.Generator(device=self.device)
        shape = (self.steps_per_epoch, self.batch_size, self.template.config.latent_dim)
        for member in self.rows:
            seed = _epoch_seed(self.configs[member].train.seed, epoch)
            generator.manual_seed(seed)
            orders.append(torch.randperm(self.splits.train.shape[0], device=self.device, generator=generator))
            generator.manual_seed(seed)
            noise.append(torch.randn(shape, device=self.device, generator=generator))
        return torch.stack(orders), torch.stack(noise)

    def _program_for_rows(self) -> _Program:
        if self._program is None:
            self._program = _Program(self)
        return self._program

    def keep(self, keep_rows: list[int]) -> None:
        """Drop every row not in `keep_rows` (indices into the current rows): finished members leave the program."""
        index = torch.tensor(keep_rows, device=self.device, dtype=torch.long)
        self.rows = [self.rows[row] for row in keep_rows]
        self.adam.select(index)
        self.numbers = {key: value[index] for key, value in self.numbers.items()}
        self._note_graph_failure()
        self._program = None  # shapes changed: a graph is captured again for the smaller cohort

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named parameter tensors [rows, ...] viewing the flat [rows, P] tensor (gradients flow to it)."""
        # One split, not a slice per tensor: its backward is one concatenation, not a zero-filled [rows, P] each.
        pieces = flat.split([numel for _, _, _, numel in self.layout], dim=1)
        return {name: piece.view(-1, *shape) for (name, shape, _, _), piece in zip(self.layout, pieces, strict=True)}

    def member_model(self, row: int) -> VAE:
        """The template VAE holding row `row`'s weights (shared: copy it to keep it)."""
        parameters = dict(self.template.named_parameters())
        with torch.no_grad():
            for name, shape, offset, numel in self.layout:
                parameters[name].copy_(self.adam.params[row, offset : offset + numel].view(shape))
        return self.template

    def member_optimizer(self, row: int) -> torch.optim.Adam:
        """A torch Adam over the template holding row `row`'s moments: `fit(resume_from=...)` can continue it."""
        model = self.member_model(row)
        config = self.configs[self.rows[row]]
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.train.learning_rate, fused=self.device.type in ("cpu", "cuda")
        )
        parameters = dict(model.named_parameters())
        for name, shape, offset, numel in self.layout:
            optimizer.state[parameters[name]] = {
                "step": self.adam.steps[row].detach().clone(),
                "exp_avg": self.adam.exp_avg[row, offset : offset + numel].view(shape).clone(),
                "exp_avg_sq": self.adam.exp_avg_sq[row, offset : offset + numel].view(shape).clone(),
            }
        return optimizer

    def state_dict(self) -> dict[str, object]:
        """The stacked state of the running rows (what a cohort checkpoint keeps of them)."""
        return {
            "rows": list(self.rows),
            "step": self.step,
            "params": self.adam.params.detach(),
            "exp_avg": self.adam.exp_avg,
            "exp_avg_sq": self.adam.exp_avg_sq,
            "adam_steps": self.adam.steps,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`: the rows it kept, where they were."""
        rows = [int(row) for row in state["rows"]]
        self.keep(rows)
        self.step = int(state["step"])
        with torch.no_grad():
            self.adam.params.copy_(state["params"])
            self.adam.exp_avg.copy_(state["exp_avg"])
            self.adam.exp_avg_sq.copy_(state["exp_avg_sq"])
            self.adam.steps.copy_(state["adam_steps"])


class _Program:
    """The vmapped step of the current rows over static buffers, graphed when asked and possible."""

    def __init__(self, cohort: StackedCohort) -> None:
        self.cohort = cohort
        rows, device = len(cohort.rows), cohort.device
        latent = cohort.template.config.latent_dim
        self.batch = torch.zeros(rows, cohort.batch_size, cohort.splits.input_dim, device=device)
        self.noise = torch.zeros(rows, cohort.batch_size, latent, device=device)
        self.losses = torch.zeros(rows, device=device)
        self.step_count = torch.full((), float(cohort.step), device=device)
        template, buffers = cohort.template, cohort.buffers

        def member_loss(
            params: dict[str, torch.Tensor],
            batch: torch.Tensor,
            noise: torch.Tensor,
            numbers: dict[str, torch.Tensor],
            step: torch.Tensor,
        ) -> torch.Tensor:
            log_likelihood, mu, logvar = functional_call(template, (params, buffers), (batch, noise))
            return scheduled_loss(numbers, -log_likelihood, gaussian_kl(mu, logvar), step)

        member_losses = vmap(member_loss, in_dims=(0, 0, 0, 0, None))

        def step() -> None:
            flat = cohort.adam.params
            losses = member_losses(cohort.views(flat), self.batch, self.noise, cohort.numbers, self.step_count)
            # Members share no parameter, so the gradient of the sum is each member's own gradient.
            (grad,) = torch.autograd.grad(losses.sum(), flat)
            cohort.adam.step(grad)
            self.losses.copy_(losses.detach())
            self.step_count.add_(1.0)

        if cohort.use_graph:
            self.graphed: GraphedStep | _Eager = GraphedStep(step, device, what=f"cohort step ({rows} members)")
        else:
            self.graphed = _Eager(step)

    def run(self, batch: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """One step of every row: batch [rows, B, D], noise [rows, B, Z] -> losses [rows] (a static buffer)."""
        self.batch.copy_(batch)
        self.noise.copy_(noise)
        self.graphed()
        return self.losses


class _Eager:
    """The step called as is (no graph asked for)."""

    reason: str | None = None

    def __init__(self, step: Callable[[], None]) -> None:
        self._step = step

    def __call__(self) -> None:
        self._step()
