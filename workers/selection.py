"""Which model to keep: feasibility, the Pareto front, its hypervolume and the recommendation — pure functions.

Reference point of the hypervolume (objectives turned to "maximise"): for a non-collapse metric maximised
(active_units, mutual_info, rate) it is 0, the value of a collapsed model; for any other objective (held-out
ELBO, IWAE) it is the worst value among the sweep's evaluated trials. A trial on the reference contributes
nothing, so the hypervolume measures how far the front pushes beyond the sweep's own worst ELBO and beyond
collapse. Benchmarks comparing sweeps pass one fixed reference point to `hypervolume` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from workers.results import Selection, TrialOutcome
from workers.spec import NON_COLLAPSE_METRICS, SweepSpec
from workers.verdict import PerExample, explain, paired_gap, undetermined

EVALUATED = ("completed", "stopped")


def is_feasible(spec: SweepSpec, metrics: dict[str, float]) -> bool:
    """All constraints hold and the model is not collapsed."""
    if spec.is_collapsed(metrics):
        return False
    if any(constraint.metric not in metrics for constraint in spec.constraints):
        return False
    return all(constraint.violation(metrics) <= 0.0 for constraint in spec.constraints)


def objective_vector(spec: SweepSpec, metrics: dict[str, float]) -> tuple[float, ...]:
    """The objectives as a point to maximise (minimised metrics are negated)."""
    return tuple(metrics[o.metric] * (1.0 if o.direction == "maximize" else -1.0) for o in spec.objectives)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a Pareto-dominates b (maximisation): no worse everywhere, strictly better somewhere."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (maximisation); duplicates of a front point are all kept."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by `points` and bounded below by `reference` (maximisation; 1 or 2 objectives)."""
    kept = [tuple(p) for p in points if all(x > r for x, r in zip(p, reference, strict=True))]
    if not kept:
        return 0.0
    if len(reference) == 1:
        return max(p[0] for p in kept) - reference[0]
    if len(reference) != 2:
        raise ValueError(f"hypervolume: 1 or 2 objectives supported, got {len(reference)}")
    volume, best_second = 0.0, reference[1]
    # Sweep along the first objective from best to worst; each point adds the strip above the best so far.
    for first, second in sorted(kept, key=lambda p: (-p[0], -p[1])):
        if second > best_second:
            volume += (first - reference[0]) * (second - best_second)
            best_second = second
    return volume


def reference_point(spec: SweepSpec, evaluated: Sequence[dict[str, float]]) -> list[float]:
    """The documented reference point (see the module docstring), in maximisation form."""
    reference = []
    for index, objective in enumerate(spec.objectives):
        if objective.metric in NON_COLLAPSE_METRICS and objective.direction == "maximize":
            reference.append(0.0)
        else:
            reference.append(min(objective_vector(spec, m)[index] for m in evaluated) if evaluated else 0.0)
    return reference


def annotate(spec: SweepSpec, trial: TrialOutcome) -> TrialOutcome:
    """Fill `collapsed` (the spec's one collapse rule) and `feasible` from the trial's metrics (None without)."""
    if trial.status not in EVALUATED or "elbo" not in trial.metrics:
        return trial.model_copy(update={"collapsed": None, "feasible": False if trial.status == "failed" else None})
    return trial.model_copy(
        update={"collapsed": spec.is_collapsed(trial.metrics), "feasible": is_feasible(spec, trial.metrics)}
    )


def rd_frontier(trials: Sequence[TrialOutcome]) -> list[TrialOutcome]:
    """RD-optimal trials: no other trial has lower-or-equal rate and distortion with one strictly lower."""
    points = [(-t.metrics["rate"], -t.metrics["distortion"]) for t in trials]
    return [trials[i] for i in pareto_front(points)]


def _notes(spec: SweepSpec, censored: Sequence[TrialOutcome], front: Sequence[TrialOutcome]) -> list[str]:
    notes = []
    if censored:
        stopped = ", ".join(f"{t.number} at epoch {t.epochs}" for t in sorted(censored, key=lambda t: t.number))
        notes.append(
            f"{len(censored)} trial(s) stopped early and left out of the comparison (censored: trial {stopped} of "
            f"{spec.epochs}); a stopped trial keeps the metrics of the epoch it stopped at."
        )
    metrics = [o.metric for o in spec.objectives]
    saturated = [t.number for t in front if t.metrics.get("mutual_info_saturated", 0.0) >= 0.5]
    if saturated:
        cap = front[0].metrics.get("mutual_info_cap", float("nan"))
        use = "; the front cannot rank them on it, use `rate`" if "mutual_info" in metrics else ""
        notes.append(
            f"mutual_info is saturated for trial(s) {saturated}: within log 2 of its cap log N = {cap:.2f} nats it "
            f"is a lower bound, and marginal KL (R - MI) is not reported there{use}."
        )
    return notes


def select(spec: SweepSpec, trials: Sequence[TrialOutcome], per_example: PerExample | None = None) -> Selection:
    """Front of the feasible trials, its hypervolume, and the recommendation: the best held-out ELBO among the
    feasible (non-collapsed, constraint-satisfying) trials, compared with the unconstrained max-ELBO trial.

    Only trials trained to the full budget are compared (all evaluated ones when none was); `per_example` maps a
    trial id to its per-example validation 'elbo' and 'iwae' arrays, for paired standard errors.
    """
    per_example = per_example or {}
    annotated = [annotate(spec, t) for t in trials]
    evaluated = [t for t in annotated if t.collapsed is not None]
    completed = [t for t in evaluated if t.status == "completed"]
    censored = [t for t in evaluated if t.status != "completed"]
    pool = completed or evaluated
    # A trial stopped before its final report lacks IWAE; it cannot sit on a front that includes iwae_ll.
    scored = [t for t in pool if all(o.metric in t.metrics for o in spec.objectives)]
    feasible = [t for t in pool if t.feasible]
    feasible_scored = [t for t in feasible if t in scored]
    reference = reference_point(spec, [t.metrics for t in scored])
    front = [feasible_scored[i] for i in pareto_front([objective_vector(spec, t.metrics) for t in feasible_scored])]
    volume = hypervolume([objective_vector(spec, t.metrics) for t in front], reference) if scored else None
    max_elbo = max(pool, key=lambda t: t.metrics["elbo"], default=None)
    recommended = max(feasible, key=lambda t: t.metrics["elbo"], default=None)
    max_iwae = max((t for t in pool if "iwae_ll" in t.metrics), key=lambda t: t.metrics["iwae_ll"], default=None)
    elbo_gap = iwae_gap = None
    if max_elbo is not None and recommended is not None and recommended.trial_id != max_elbo.trial_id:
        elbo_gap = paired_gap(per_example, max_elbo, recommended, "elbo", "elbo")
        iwae_gap = paired_gap(per_example, max_elbo, recommended, "iwae", "iwae_ll")
    verdict_open = undetermined(max_elbo, completed, censored)
    reason = explain(
        spec,
        max_elbo=max_elbo,
        recommended=recommended,
        feasible_count=len(feasible),
        completed_count=len(completed),
        elbo_gap=elbo_gap,
        max_iwae=max_iwae,
        iwae_gap=iwae_gap,
        verdict_open=verdict_open,
        failed=len(trials) - len(evaluated),
    )
    return Selection(
        front=front,
        hypervolume=volume,
        reference_point=reference,
        recommended=recommended,
        reason=reason,
        max_elbo=max_elbo,
        max_elbo_collapsed=None if max_elbo is None or verdict_open else max_elbo.collapsed,
        elbo_gap=None if recommended is None or max_elbo is None else (elbo_gap.gap if elbo_gap else 0.0),
        elbo_gap_se=elbo_gap.standard_error if elbo_gap else None,
        max_iwae=max_iwae,
        iwae_gap=iwae_gap,
        bounds_disagree=None if max_iwae is None or max_elbo is None else max_iwae.trial_id != max_elbo.trial_id,
        censored_trials=sorted(t.number for t in censored),
        rd_frontier=sorted(t.number for t in rd_frontier(pool)),
        collapse_rate_threshold=spec.collapse_rate_threshold,
        notes=_notes(spec, censored, front),
    )
