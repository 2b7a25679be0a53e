"""Benchmark: hypervolume vs trials for nsga2 / tpe / gp against random and a dense grid, on digits, 3 seeds.

Search efficiency is a property of the sampler, so trials run in this process through Optuna's ask/tell with the
sweep's own sampler factory and define-by-run space (workers.search), one rdvae fit per trial — the numbers do
not depend on Ray. Every run is scored against one reference point: the worst held-out ELBO seen in the whole
benchmark and 0 active units. Reported: trials each sampler needs to reach 95 % of the dense grid's hypervolume.
"""

from __future__ import annotations

import argparse
import time
from functools import cache

import optuna

from rdvae import fit, load_data
from workers import SweepSpec
from workers.search import SearchSpaceFn, build_sampler, grid_size
from workers.selection import hypervolume, is_feasible, objective_vector, pareto_front
from workers.trainable import run_config

SAMPLERS = ("nsga2", "tpe", "gp", "random")


def make_spec(sampler: str, seed: int, args: argparse.Namespace, n_trials: int) -> SweepSpec:
    return SweepSpec.model_validate(
        {
            "dataset": "digits",
            "model": {"latent_dim": args.latent_dim, "hidden_dims": [args.hidden]},
            "search_space": {
                "beta": {"low": 0.02, "high": 20.0},
                "learning_rate": {"low": 3e-4, "high": 1e-2},
            },
            "n_trials": n_trials,
            "epochs": args.epochs,
            "iwae_samples": 0,
            "objectives": [{"metric": "elbo"}, {"metric": "active_units"}],
            "constraints": [{"metric": "active_units", "op": ">=", "value": 2}],
            "sampler": sampler,
            "grid_points": args.grid_points,
            "seed": seed,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--latent-dim", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--grid-points", type=int, default=6, help="per dimension (β × learning rate)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_data(make_spec("random", 0, args, 1).dataset)

    @cache
    def evaluate(beta: float, learning_rate: float) -> tuple[tuple[str, float], ...]:
        # Training is seeded by the spec (seed 0 for every run): the same point always gives the same model.
        spec = make_spec("random", 0, args, 1)
        result = fit(run_config(spec, {"beta": beta, "learning_rate": learning_rate}), data=data)
        assert result.validation is not None
        return tuple(result.validation.as_dict().items())

    def run(sampler: str, seed: int, n_trials: int) -> list[dict[str, float]]:
        spec = make_spec(sampler, seed, args, n_trials)
        directions = [o.direction for o in spec.objectives]
        study = optuna.create_study(directions=directions, sampler=build_sampler(spec))
        space, history = SearchSpaceFn(spec), []

        def objective(trial: optuna.Trial) -> list[float]:
            space(trial)
            metrics = dict(evaluate(trial.params["beta"], trial.params["learning_rate"]))
            for index, value in enumerate(spec.constraint_violations(metrics)):
                trial.set_constraint(f"constraint_{index}", value)
            history.append(metrics)
            return [metrics[o.metric] for o in spec.objectives]

        # optimize(), not ask/tell: the grid sampler stops the study from inside when its grid is exhausted.
        study.optimize(objective, n_trials=n_trials)
        return history

    started = time.perf_counter()
    grid_spec = make_spec("grid", 0, args, 1)
    grid_runs = run("grid", 0, grid_size(grid_spec))
    runs = {(name, seed): run(name, seed, args.trials) for name in SAMPLERS for seed in range(args.seeds)}
    everything = [m for history in [grid_runs, *runs.values()] for m in history]
    reference = (min(m["elbo"] for m in everything), 0.0)

    def curve(history: list[dict[str, float]]) -> list[float]:
        values = []
        for count in range(1, len(history) + 1):
            feasible = [objective_vector(grid_spec, m) for m in history[:count] if is_feasible(grid_spec, m)]
            front = [feasible[i] for i in pareto_front(feasible)]
            values.append(hypervolume(front, reference))
        return values

    grid_hv = curve(grid_runs)[-1]
    print(
        f"command: python bench/search_efficiency.py --trials {args.trials} --seeds {args.seeds} "
        f"--epochs {args.epochs} --grid-points {args.grid_points}"
    )
    print(
        f"digits; β ∈ [0.02, 20] (log) × learning rate ∈ [3e-4, 1e-2] (log); objectives held-out ELBO and "
        f"active units, constraint active_units >= 2; {args.epochs} epochs per trial; "
        f"{evaluate.cache_info().currsize} distinct fits, "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(
        f"reference point (ELBO, active units) = ({reference[0]:.2f}, 0); dense grid {args.grid_points}×"
        f"{args.grid_points} = {len(grid_runs)} trials, hypervolume {grid_hv:.2f}\n"
    )
    checkpoints = [n for n in (4, 8, 12, 16, 24, 32, 48) if n <= args.trials]
    print("| sampler | " + " | ".join(f"HV@{n}" for n in checkpoints) + " | trials to 95 % of grid HV (per seed) |")
    print("|---|" + "---|" * len(checkpoints) + "---|")
    for name in SAMPLERS:
        curves = [curve(runs[(name, seed)]) for seed in range(args.seeds)]
        means = [sum(c[n - 1] for c in curves) / len(curves) for n in checkpoints]
        reached = [next((i + 1 for i, v in enumerate(c) if v >= 0.95 * grid_hv), None) for c in curves]
        shown = ", ".join(str(r) if r is not None else f">{args.trials}" for r in reached)
        print(f"| {name} | " + " | ".join(f"{m / grid_hv:.2f}" for m in means) + f" | {shown} |")
    print("\nHV@n: mean over seeds of the hypervolume after n trials, as a fraction of the dense grid's.")


if __name__ == "__main__":
    main()
