"""Optuna for cohort sweeps: each Tune trial asks K Optuna trials at once and tells each member's result once.

The study, sampler and define-by-run space are the ones `workers.search` builds for one-trial-per-Tune-trial
sweeps, so a cohort sweep searches the same space with the same sampler; NSGA-II, TPE and GP simply receive K asks
before K tells (a batch). Members that cannot share one stacked program (`rdvae.cohort.cohort_key`: a searched
latent size or decoder) go to separate cohorts: asked members wait, grouped by that key, until a group fills a
cohort or the budget of `n_trials` asks is spent.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from rdvae.cohort import cohort_key
from workers.cohort_trainable import ERROR, TERMINATED, cohort_config, member_reports, member_statuses
from workers.search import SearchSpaceFn, build_sampler, constraint_count, objective_metrics, warm_start_points
from workers.spec import SweepSpec
from workers.trainable import run_config


def member_constraint_values(spec: SweepSpec, metrics: dict[str, Any]) -> list[float]:
    """A member's constraint values, as ConstrainedOptunaSearch sets them: the reported ones, else (a member
    stopped early) computed from its last metrics, a metric it lacks (`iwae_ll`) counting as violated."""
    values = [metrics.get(f"constraint_{index}") for index in range(constraint_count(spec))]
    if all(isinstance(v, int | float) for v in values):
        return [float(v) for v in values]
    observed = {key: float(value) for key, value in metrics.items() if isinstance(value, int | float)}
    computed = [c.violation(observed) if c.metric in observed else 1.0 for c in spec.constraints]
    if spec.asks_for_non_collapse():
        computed.append(1.0 if observed.get("collapsed", 0.0) >= 0.5 else -1.0)
    return computed


class CohortOptunaSearch(Searcher):
    """A Tune searcher whose suggestion is a cohort: up to `spec.cohort_size` Optuna trials of one architecture.

    Each member is told exactly once when its cohort ends: COMPLETE with its objective values, PRUNED when it lacks
    one (cut off before any held-out metric, cancelled), FAIL when it diverged or its cohort crashed; constraint
    values are set before the tell as ConstrainedOptunaSearch does. Returns `Searcher.FINISHED` once `n_trials`
    members are handed out (a split space may need more Tune trials than ceil(n_trials / cohort_size)).
    """

    def __init__(self, spec: SweepSpec) -> None:
        super().__init__(metric=None, mode=None)
        self.spec = spec
        self.metrics = objective_metrics(spec)[0]
        self.space = SearchSpaceFn(spec)
        self.study = optuna.create_study(
            directions=[o.direction for o in spec.objectives],
            sampler=build_sampler(spec, batch=True),
            study_name="rdvae",
        )
        for point in warm_start_points(spec):
            self.study.enqueue_trial(point)
        self.asked = 0
        self.waiting: list[tuple[str, optuna.Trial, dict[str, Any]]] = []
        self.cohorts: dict[str, list[tuple[optuna.Trial, dict[str, Any]]]] = {}
        self.told: set[int] = set()

    def _ask(self) -> None:
        trial = self.study.ask()
        fixed = self.space(trial)  # suggests the searched values on `trial`, returns the fixed ones
        params = {**trial.params, **fixed}
        self.asked += 1
        self.waiting.append((cohort_key(run_config(self.spec, params)), trial, params))

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id in self.cohorts:
            return cohort_config([{"number": t.number, "params": params} for t, params in self.cohorts[trial_id]])
        size = self.spec.cohort_size
        while self.asked < self.spec.n_trials and not any(len(g) >= size for g in self._groups().values()):
            self._ask()
        if not self.waiting:
            return Searcher.FINISHED
        groups = self._groups()
        key = next((k for k, group in groups.items() if len(group) >= size), self.waiting[0][0])
        chosen = groups[key][:size]
        self.waiting = [item for item in self.waiting if item not in chosen]
        self.cohorts[trial_id] = [(trial, params) for _, trial, params in chosen]
        return cohort_config([{"number": trial.number, "params": params} for _, trial, params in chosen])

    def _groups(self) -> dict[str, list[tuple[str, optuna.Trial, dict[str, Any]]]]:
        groups: dict[str, list[tuple[str, optuna.Trial, dict[str, Any]]]] = {}
        for item in self.waiting:
            groups.setdefault(item[0], []).append(item)
        return groups

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        members = self.cohorts.get(trial_id, [])
        reports = member_reports(result) or [{} for _ in members]
        statuses = member_statuses(ERROR if error else TERMINATED, result, len(members))
        for (trial, _), report, status in zip(members, reports, statuses, strict=True):
            if trial.number not in self.told:
                self._tell(trial, report.get("metrics") or {}, status)

    def _tell(self, trial: optuna.Trial, metrics: dict[str, Any], status: str) -> None:
        values = [metrics.get(metric) for metric in self.metrics]
        state = TrialState.COMPLETE
        if status == "failed":
            state = TrialState.FAIL
        elif not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            state = TrialState.PRUNED
        if metrics and state != TrialState.FAIL:
            constraints = member_constraint_values(self.spec, metrics)
            if all(math.isfinite(v) for v in constraints):
                for index, value in enumerate(constraints):
                    trial.set_constraint(f"constraint_{index}", value)
        self.told.add(trial.number)
        try:
            self.study.tell(trial, [float(v) for v in values] if state == TrialState.COMPLETE else None, state=state)
        except RuntimeError as error:
            # The grid sampler stops the study once every grid point has started; outside `optimize` Optuna refuses
            # that with this error, raised after the trial's state is stored.
            if "Study.stop" not in str(error):
                raise

    def cohort_numbers(self, trial_id: str) -> list[int]:
        """Optuna trial numbers of the members of Tune trial `trial_id`."""
        return [trial.number for trial, _ in self.cohorts.get(trial_id, [])]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__.copy(), handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))
