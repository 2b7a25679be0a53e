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

EVALUATED = ("completed", "stopped")


def is_feasible(spec: SweepSpec, metrics: dict[str, float]) -> bool:
    """All constraints hold and the model is not collapsed."""
    if metrics.get("collapsed", 0.0) >= 0.5:
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
    """Fill `collapsed` and `feasible` from the trial's metrics (None for trials without metrics)."""
    if trial.status not in EVALUATED or "elbo" not in trial.metrics:
        return trial.model_copy(update={"collapsed": None, "feasible": False if trial.status == "failed" else None})
    collapsed = trial.metrics.get("collapsed", 0.0) >= 0.5
    return trial.model_copy(update={"collapsed": collapsed, "feasible": is_feasible(spec, trial.metrics)})


def _describe(trial: TrialOutcome) -> str:
    m = trial.metrics
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(trial.params.items()))
    return (
        f"trial {trial.number} ({params}): held-out ELBO {m['elbo']:.2f} nats, rate {m['rate']:.2f}, "
        f"{int(m.get('active_units', 0))} active units"
    )


def select(spec: SweepSpec, trials: Sequence[TrialOutcome]) -> Selection:
    """Front of the feasible trials, its hypervolume, and the recommendation: the best held-out ELBO among the
    feasible (non-collapsed, constraint-satisfying) trials — compared with the unconstrained max-ELBO trial."""
    annotated = [annotate(spec, t) for t in trials]
    evaluated = [t for t in annotated if t.collapsed is not None]
    # A trial stopped before its final report lacks IWAE; it cannot sit on a front that includes iwae_ll.
    scored = [t for t in evaluated if all(o.metric in t.metrics for o in spec.objectives)]
    feasible = [t for t in evaluated if t.feasible]
    points = [objective_vector(spec, t.metrics) for t in feasible if t in scored]
    feasible_scored = [t for t in feasible if t in scored]
    reference = reference_point(spec, [t.metrics for t in scored])
    front = [feasible_scored[i] for i in pareto_front(points)]
    volume = hypervolume([objective_vector(spec, t.metrics) for t in front], reference) if scored else None
    max_elbo = max(evaluated, key=lambda t: t.metrics["elbo"], default=None)
    recommended = max(feasible, key=lambda t: t.metrics["elbo"], default=None)
    rules = ", ".join(["not collapsed", *(c.describe() for c in spec.constraints)])
    if recommended is None:
        reason = (
            f"no recommendation: none of the {len(evaluated)} evaluated trials is feasible ({rules}); "
            f"{len(trials) - len(evaluated)} trial(s) failed or produced no metrics"
        )
        gap = None
    else:
        reason = f"best held-out ELBO among the {len(feasible)} feasible trials ({rules}): {_describe(recommended)}"
        assert max_elbo is not None
        gap = max_elbo.metrics["elbo"] - recommended.metrics["elbo"]
        if max_elbo.trial_id == recommended.trial_id:
            reason += "; it is also the unconstrained max-ELBO trial"
        else:
            state = "collapsed" if max_elbo.collapsed else "not collapsed but infeasible"
            reason += f"; the unconstrained max-ELBO {_describe(max_elbo)} is {state}, {gap:.2f} nats better in ELBO"
    return Selection(
        front=front,
        hypervolume=volume,
        reference_point=reference,
        recommended=recommended,
        reason=reason,
        max_elbo=max_elbo,
        max_elbo_collapsed=None if max_elbo is None else max_elbo.collapsed,
        elbo_gap=gap,
    )
