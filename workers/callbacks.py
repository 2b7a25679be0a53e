"""Driver-side hooks of a running sweep: the Tune callback that feeds MLflow and progress, found via a registry.

Tune pickles its run config (callbacks and stoppers included) into the experiment directory and unpickles it on
restore, so these objects hold only the sweep id; the live MLflow client and the caller's callables are looked
up in `LIVE`, which `run_sweep` fills for the duration of the sweep in this process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.experiment import Trial

from workers.live_trials import live_outcomes, trial_number
from workers.results import SweepProgress
from workers.spec import SweepSpec
from workers.tracking import SweepTracker
from workers.trainable import CHECKPOINT_FILE, FINAL_FLAG


@dataclass
class LiveSweep:
    """What the driver process holds while a sweep runs."""

    spec: SweepSpec
    sweep_id: str
    tracker: SweepTracker
    audit_dir: Path
    on_progress: Callable[[SweepProgress], None] | None = None
    should_stop: Callable[[], bool] | None = None
    cancelled: bool = False


LIVE: dict[str, LiveSweep] = {}


def attempts(audit_dir: Path, trial_id: str) -> int:
    """How many times a trial's process started (first run, retries, resumes)."""
    path = audit_dir / f"{trial_id}.jsonl"
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.is_file() else 0


def error_summary(text: str | None) -> str | None:
    """The last line of a traceback ("module.Error: message"), which says what went wrong."""
    if not text:
        return None
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def trial_params(trial: Trial) -> dict[str, Any]:
    """The sampled parameters of a trial (what Optuna suggested)."""
    return {key: value for key, value in trial.config.items() if isinstance(value, int | float | str)}


def progress(live: LiveSweep, trials: list[Trial], starting: Trial | None = None) -> SweepProgress:
    """A snapshot of the sweep from Tune's trial list; `starting` counts as running (Tune calls `on_trial_start`
    before it sets the trial's status to RUNNING)."""
    ended = [t for t in trials if t.status in (Trial.TERMINATED, Trial.ERROR)]
    completed = [t for t in ended if t.status == Trial.TERMINATED and t.last_result.get(FINAL_FLAG) == 1]
    elbos = [float(t.last_result["elbo"]) for t in ended if "elbo" in t.last_result]
    return SweepProgress(
        total=live.spec.n_trials,
        completed=len(completed),
        stopped=sum(t.status == Trial.TERMINATED for t in ended) - len(completed),
        running=sum(t.status == Trial.RUNNING or t is starting for t in trials),
        failed=sum(t.status == Trial.ERROR for t in trials),
        collapsed=sum(t.last_result.get("collapsed", 0.0) >= 0.5 for t in ended),
        best_elbo=max(elbos, default=None),
        finished=sorted(t.trial_id for t in ended),
        sweep_id=live.sweep_id,
        mlflow_parent_run_id=live.tracker.parent_run_id,
        mlflow_experiment_id=live.tracker.experiment_id,
        trials=live_outcomes(trials),
    )


class SweepCallback(tune.Callback):
    """Child runs, per-epoch metrics, models and status in MLflow; a SweepProgress after every trial event."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id

    @property
    def live(self) -> LiveSweep:
        return LIVE[self.sweep_id]

    def _emit(self, trials: list[Trial], starting: Trial | None = None) -> None:
        if self.live.on_progress is not None:
            self.live.on_progress(progress(self.live, trials, starting))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.live.tracker.child_run(trial.trial_id, trial_params(trial), trial_number(trial.trial_id, trial.path))
        self._emit(trials, starting=trial)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self.live.tracker.log_result(trial.trial_id, trial_params(trial), result)
        if result.get(FINAL_FLAG) == 1:
            self._emit(trials)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        live, params = self.live, trial_params(trial)
        status = "completed" if trial.last_result.get(FINAL_FLAG) == 1 else "stopped"
        checkpoint = trial.checkpoint
        if live.spec.mlflow.log_models and checkpoint is not None:
            live.tracker.log_model_later(trial.trial_id, params, Path(checkpoint.path) / CHECKPOINT_FILE)
        live.tracker.end_trial(trial.trial_id, params, status, attempts=attempts(live.audit_dir, trial.trial_id))
        self._emit(trials)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        live = self.live
        error = error_summary(trial.get_error())
        live.tracker.end_trial(
            trial.trial_id,
            trial_params(trial),
            "failed",
            error=error,
            attempts=attempts(live.audit_dir, trial.trial_id),
        )
        self._emit(trials)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._emit(trials)
