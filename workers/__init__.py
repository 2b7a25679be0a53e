"""workers: the sweep engine — Ray Tune trials, Optuna multi-objective search over beta and C, MLflow tracking.

The heavy names (run_sweep pulls in MLflow and Ray Tune, render_rd_plane matplotlib) load on first use: every
trial process imports `workers.trainable`, and should not pay for the driver's imports.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from workers.results import Selection, SweepProgress, SweepResult, TrialOutcome
from workers.spec import Constraint, ObjectiveSpec, SearchSpace, SpecError, SweepSpec, load_spec

if TYPE_CHECKING:
    from workers.plot import render_rd_plane
    from workers.sweep import run_sweep

_LAZY = {"run_sweep": "workers.sweep", "render_rd_plane": "workers.plot"}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
