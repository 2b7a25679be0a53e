"""workers: the sweep engine — Ray Tune trials, Optuna multi-objective search over beta and C, MLflow tracking."""

from workers.plot import render_rd_plane
from workers.results import Selection, SweepProgress, SweepResult, TrialOutcome
from workers.spec import Constraint, ObjectiveSpec, SearchSpace, SpecError, SweepSpec, load_spec
from workers.sweep import run_sweep

__all__ = [
    "Constraint",
    "ObjectiveSpec",
    "SearchSpace",
    "Selection",
    "SpecError",
    "SweepProgress",
    "SweepResult",
    "SweepSpec",
    "TrialOutcome",
    "load_spec",
    "render_rd_plane",
    "run_sweep",
]
