"""Trial outcomes of a sweep while it runs (from Tune's trial list), so `/trials` shows them before the end."""

from __future__ import annotations

import re
from pathlib import Path

from ray.tune.experiment import Trial

from workers.results import TrialOutcome, TrialStatus
from workers.tracking import numeric_metrics
from workers.trainable import FINAL_FLAG


def trial_number(trial_id: str, path: str | None) -> int:
    """0-based order of suggestion: Tune names trial directories "<trainable>_<trial id>_<1-based index>_…"."""
    found = re.search(rf"{re.escape(trial_id)}_(\d+)", Path(path).name) if path else None
    return int(found.group(1)) - 1 if found else 0


def _status(trial: Trial) -> TrialStatus:
    if trial.status == Trial.ERROR:
        return "failed"
    if trial.status == Trial.TERMINATED:
        return "completed" if trial.last_result.get(FINAL_FLAG) == 1 else "stopped"
    return "running"


def _error(trial: Trial) -> str | None:
    if trial.status != Trial.ERROR:
        return None
    lines = [line.strip() for line in str(trial.get_error() or "").splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def live_outcomes(trials: list[Trial]) -> list[TrialOutcome]:
    """What each started trial has done so far: status, sampled params, latest held-out metrics, error line."""
    outcomes = []
    for trial in trials:
        if trial.status == Trial.PENDING and not trial.last_result:
            continue
        result = trial.last_result or {}
        outcomes.append(
            TrialOutcome(
                trial_id=trial.trial_id,
                number=trial_number(trial.trial_id, trial.path),
                status=_status(trial),
                params={k: v for k, v in trial.config.items() if isinstance(v, int | float | str)},
                metrics=numeric_metrics(result) if "elbo" in result else {},
                error=_error(trial),
                epochs=int(result.get("epoch", 0) or 0),
            )
        )
    return sorted(outcomes, key=lambda outcome: outcome.number)
