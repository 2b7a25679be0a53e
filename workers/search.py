"""Optuna side of a sweep: the sampler, the define-by-run search space and a constraint-aware OptunaSearch."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from ray.tune.search.optuna import OptunaSearch

from workers.spec import SweepSpec

MODES = {"maximize": "max", "minimize": "min"}


def objective_metrics(spec: SweepSpec) -> tuple[list[str], list[str]]:
    """Tune's multi-objective metric and mode lists, e.g. (['elbo', 'active_units'], ['max', 'max'])."""
    return [o.metric for o in spec.objectives], [MODES[o.direction] for o in spec.objectives]


def constraint_count(spec: SweepSpec) -> int:
    """How many values `SweepSpec.constraint_violations` returns."""
    return len(spec.constraints) + (1 if spec.asks_for_non_collapse() else 0)


def _grid(spec: SweepSpec) -> dict[str, list[Any]]:
    space, points = spec.search_space, spec.grid_points
    grid: dict[str, list[Any]] = {}
    if len(space.objective) > 1:
        grid["objective"] = list(space.objective)
    if "beta" in space.objective:
        grid["beta"] = [float(v) for v in np.geomspace(space.beta.low, space.beta.high, points)]
    if "capacity" in space.objective:
        grid["C"] = [float(v) for v in np.linspace(space.C.low, space.C.high, points)]
    if space.learning_rate is not None:
        grid["learning_rate"] = [
            float(v) for v in np.geomspace(space.learning_rate.low, space.learning_rate.high, points)
        ]
    if space.latent_dim is not None:
        grid["latent_dim"] = list(space.latent_dim)
    if space.decoder is not None:
        grid["decoder"] = list(space.decoder)
    return grid


def grid_size(spec: SweepSpec) -> int:
    """Number of distinct points of the grid sampler's grid."""
    return math.prod(len(values) for values in _grid(spec).values())


def build_sampler(spec: SweepSpec, batch: bool = False) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded. nsga2, tpe and gp honour the constraint values set on each trial.

    Start-up phases are shortened to a quarter of the budget so that short sweeps still leave the random phase.
    `batch` (cohorts: K asks before any tell) gives TPE its constant liar, so that a batch does not pile onto one point.
    """
    startup = max(2, min(10, spec.n_trials // 4))
    if spec.sampler == "nsga2":
        population = max(4, min(50, math.ceil(spec.n_trials / 4)))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=spec.seed)
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(
            n_startup_trials=startup, seed=spec.seed, multivariate=True, constant_liar=batch
        )
    if spec.sampler == "gp":
        return optuna.samplers.GPSampler(n_startup_trials=startup, seed=spec.seed)
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(_grid(spec), seed=spec.seed)
    return optuna.samplers.RandomSampler(seed=spec.seed)


def warm_start_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """`spec.warm_start_params` as Optuna can enqueue them: only searched parameters, values clipped into the
    current ranges, points of an objective family no longer searched dropped (the grid sampler takes none)."""
    space, points = spec.search_space, []
    if spec.sampler == "grid":
        return []
    for params in spec.warm_start_params:
        family = params.get("objective", space.objective[0])
        if family not in space.objective:
            continue
        point: dict[str, Any] = {"objective": family} if len(space.objective) > 1 else {}
        ranges = {"beta": space.beta if family == "beta" else None, "C": space.C if family == "capacity" else None}
        ranges["learning_rate"] = space.learning_rate
        for name, bounds in ranges.items():
            value = params.get(name)
            if bounds is not None and isinstance(value, int | float):
                point[name] = min(max(float(value), bounds.low), bounds.high)
        for name, choices in (("latent_dim", space.latent_dim), ("decoder", space.decoder)):
            if choices is not None and params.get(name) in choices:
                # the choice itself, not the given value: 16.0 equals 16 but a model's latent_dim is a strict int
                point[name] = choices[list(choices).index(params[name])]
        points.append(point)
    return points


class SearchSpaceFn:
    """Define-by-run space for OptunaSearch; a picklable object because Tune saves the searcher with the sweep."""

    def __init__(self, spec: SweepSpec) -> None:
        self.space = spec.search_space
        self.grid = _grid(spec) if spec.sampler == "grid" else None

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        space = self.space
        family = (
            space.objective[0] if len(space.objective) == 1 else trial.suggest_categorical("objective", space.objective)
        )
        fixed: dict[str, Any] = {"objective": family}
        if self.grid is not None:
            # The grid sampler needs every grid dimension suggested, conditional or not.
            for name in ("beta", "C"):
                if name in self.grid:
                    trial.suggest_float(name, min(self.grid[name]), max(self.grid[name]))
        elif family == "beta":
            trial.suggest_float("beta", space.beta.low, space.beta.high, log=True)
        else:
            trial.suggest_float("C", space.C.low, space.C.high)
        if space.learning_rate is not None:
            trial.suggest_float("learning_rate", space.learning_rate.low, space.learning_rate.high, log=True)
        if space.latent_dim is not None:
            trial.suggest_categorical("latent_dim", space.latent_dim)
        if space.decoder is not None:
            trial.suggest_categorical("decoder", space.decoder)
        return fixed


class ConstrainedOptunaSearch(OptunaSearch):
    """OptunaSearch that hands each finished trial's constraint values to the sampler.

    The trainable reports `constraint_0..n` with its final metrics; they are set on the Optuna trial
    (`Trial.set_constraint`, Optuna >= 5) just before `study.tell`, where constraint-aware samplers read them.
    A trial ended early (ASHA, collapse stopper) has only its last epoch's held-out metrics: its constraint values
    are computed from those, because Optuna counts a trial without constraint values as feasible. A metric only the
    final report carries (`iwae_ll`) counts as violated (1.0), and a trial missing an objective is told PRUNED:
    multi-objective OptunaSearch would hand `None` to `study.tell`, which refuses it and leaves the trial RUNNING.
    """

    def __init__(self, spec: SweepSpec) -> None:
        metric, mode = objective_metrics(spec)
        super().__init__(
            space=SearchSpaceFn(spec),
            metric=metric,
            mode=mode,
            points_to_evaluate=warm_start_points(spec) or None,
            sampler=build_sampler(spec),
            study_name="rdvae",
        )
        self.spec = spec
        self.n_constraints = constraint_count(spec)

    def _constraint_values(self, result: dict) -> list[float]:
        values = [result.get(f"constraint_{index}") for index in range(self.n_constraints)]
        if all(isinstance(v, int | float) for v in values):
            return [float(v) for v in values]
        observed = {key: float(value) for key, value in result.items() if isinstance(value, int | float)}
        computed = [c.violation(observed) if c.metric in observed else 1.0 for c in self.spec.constraints]
        if self.spec.asks_for_non_collapse():
            computed.append(1.0 if self.spec.is_collapsed(observed) else -1.0)
        return computed

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and result and trial_id not in self._completed_trials:
            values = self._constraint_values(result)
            if all(math.isfinite(v) for v in values):
                for index, value in enumerate(values):
                    ot_trial.set_constraint(f"constraint_{index}", value)
            if any(not isinstance(result.get(m), int | float) for m in objective_metrics(self.spec)[0]):
                result = None
        super().on_trial_complete(trial_id, result=result, error=error)
