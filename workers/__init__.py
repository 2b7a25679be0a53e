"""workers: the sweep engine — Ray Tune trials, Optuna multi-objective search over beta and C, MLflow tracking."""

from workers.results import Selection, SweepProgress, SweepResult, TrialOutcome
from workers.spec import Constraint, ObjectiveSpec, SearchSpace, SweepSpec

__all__ = [
    "Constraint",
    "ObjectiveSpec",
    "SearchSpace",
    "Selection",
    "SweepProgress",
    "SweepResult",
    "SweepSpec",
    "TrialOutcome",
]
