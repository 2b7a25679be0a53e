"""run_sweep: one SweepSpec into Ray Tune trials, searched by Optuna, selected, and recorded in MLflow; resumable."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.stopper import CombinedStopper, Stopper

from rdvae import DataSplits, load_data
from workers.budget import anneal_end_epoch, check_budget
from workers.callbacks import LIVE, LiveSweep, SweepCallback, attempts, error_summary
from workers.cohort_driver import cohort_outcomes, cohort_plan
from workers.cohort_trainable import train_cohort
from workers.datasets import checked_or_spec_error
from workers.plot import render_rd_plane
from workers.results import SweepProgress, SweepResult, TrialOutcome
from workers.search import ConstrainedOptunaSearch
from workers.selection import annotate, select
from workers.spec import SpecError, SweepSpec, check_sweep_id
from workers.stoppers import CancelStopper, CollapseStopper
from workers.storage import atomic_local_filesystem, check_restorable
from workers.tracking import SweepTracker, log_dataset, numeric_metrics
from workers.trainable import CHECKPOINT_FILE, FINAL_FLAG, PER_EXAMPLE_FILE, load_per_example, train_trial

STORAGE_ROOT_ENV = "RDVAE_STORAGE_ROOT"
DEFAULT_STORAGE_ROOT = ".rdvae/sweeps"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
# Ray's "clusters disabled" mode (meant for laptops) binds every Ray process to 127.0.0.1 instead of the host's
# interface address; a sweep that starts its own Ray has no other node to talk to, so it stays on loopback.
_LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_SPEC_FILE = "spec.json"
_RESULT_FILE = "result.json"
_AUDIT_DIR = "starts"


def resolve_storage_root(storage_root: str | Path | None) -> Path:
    """The argument, else $RDVAE_STORAGE_ROOT, else .rdvae/sweeps (absolute: Tune needs an absolute path)."""
    return Path(storage_root or os.environ.get(STORAGE_ROOT_ENV) or DEFAULT_STORAGE_ROOT).resolve()


def new_sweep_id(spec: SweepSpec) -> str:
    """A fresh id: the spec's name (slugged), a UTC timestamp and a random suffix."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.name or "sweep").strip("-.")[:60] or "sweep"
    return f"{slug}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


def connect_ray(address: str | None = None) -> bool:
    """Connect to the cluster at `address` (else $RAY_ADDRESS), else start a local, loopback-only Ray.

    Returns True when this call started or connected Ray (the caller then shuts it down), False when Ray was
    already initialised in this process.
    """
    if ray.is_initialized():
        return False
    address = address or os.environ.get(RAY_ADDRESS_ENV)
    if address:
        ray.init(address=address)
    else:
        os.environ[_LOOPBACK_ONLY_ENV] = "0"
        # "local": never attach to some other Ray found on this machine.
        ray.init(address="local", include_dashboard=False)
    return True


def _pin_spec(spec: SweepSpec, sweep_dir: Path) -> None:
    path = sweep_dir / _SPEC_FILE
    if path.is_file():
        stored = SweepSpec.model_validate_json(path.read_text())
        if stored != spec:
            raise SpecError(f"sweep {sweep_dir.name!r} already exists with a different spec; use another sweep id")
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(spec.model_dump_json(indent=2))


def _scheduler(spec: SweepSpec, n_train: int) -> TrialScheduler:
    stopping = spec.early_stopping
    if not stopping.asha:
        return FIFOScheduler()
    # Ray schedulers rank trials on one metric: held-out ELBO. max_t is one past the last epoch because the
    # trainable's final report (IWAE, test metrics) carries epoch = spec.epochs again and must not be cut.
    # No rung before the capacity ramp ends: a capacity trial judged while C_t ~ 0 is judged on another objective.
    grace = max(stopping.grace_period, anneal_end_epoch(spec, n_train))
    return ASHAScheduler(
        time_attr="epoch",
        metric="elbo",
        mode="max",
        max_t=spec.epochs + 1,
        grace_period=min(grace, spec.epochs),
        reduction_factor=stopping.reduction_factor,
    )


def _stopper(spec: SweepSpec, sweep_id: str) -> Stopper:
    stoppers: list[Stopper] = [CancelStopper(sweep_id)]
    stopping = spec.early_stopping
    if stopping.stop_collapsed and spec.asks_for_non_collapse():
        stoppers.append(CollapseStopper(stopping.collapse_warmup_epochs, spec.collapse_rate_threshold))
    return CombinedStopper(*stoppers)


def _tuner(spec: SweepSpec, sweep_id: str, root: Path, audit_dir: Path, data: DataSplits | None = None) -> tune.Tuner:
    data = data if data is not None else load_data(spec.dataset)
    n_train = int(data.train.shape[0])
    check_budget(spec, n_train)
    cohorts = spec.cohort_size > 1
    trainable = tune.with_resources(
        tune.with_parameters(
            train_cohort if cohorts else train_trial,
            spec_json=spec.model_dump_json(),
            data=data,
            audit_dir=str(audit_dir),
        ),
        {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus},
    )
    path = root / sweep_id
    filesystem = atomic_local_filesystem()  # a driver killed while Tune saves its state leaves the old state whole
    if tune.Tuner.can_restore(str(path), storage_filesystem=filesystem):
        # Finished and failed trials stay as they are; trials cut off with the driver continue from their last
        # checkpoint; the Optuna study, ASHA's rungs and the trial counter come back with the experiment state.
        check_restorable(path)
        return tune.Tuner.restore(
            str(path), trainable, resume_unfinished=True, resume_errored=False, storage_filesystem=filesystem
        )
    if cohorts:
        tune_config, stop, callbacks = cohort_plan(spec, sweep_id)
    else:
        tune_config = tune.TuneConfig(
            search_alg=ConstrainedOptunaSearch(spec),
            scheduler=_scheduler(spec, n_train),
            num_samples=spec.n_trials,
            max_concurrent_trials=spec.max_concurrent_trials,
            # A trial's process (torch, rdvae and the data already imported) serves the next trial: on short
            # trials a fresh worker process per trial costs as much as the training itself.
            reuse_actors=True,
        )
        stop, callbacks = _stopper(spec, sweep_id), [SweepCallback(sweep_id)]
    return tune.Tuner(
        trainable,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name=sweep_id,
            storage_path=str(root),
            storage_filesystem=filesystem,
            stop=stop,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Two, not one: the saved experiment state may lag one report behind, and the checkpoint it names
            # must still exist when a killed driver's sweep is restored.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks,
            verbose=0,
        ),
    )


def _trial_number(trial_id: str, path: str) -> int:
    # Tune names trial directories "<trainable>_<trial id>_<1-based index>_<params>_<time>".
    found = re.search(rf"{re.escape(trial_id)}_(\d+)", Path(path).name)
    return int(found.group(1)) - 1 if found else 0


def _outcomes(
    spec: SweepSpec, grid: tune.ResultGrid, live: LiveSweep
) -> tuple[list[TrialOutcome], dict[str, dict[str, np.ndarray]]]:
    outcomes, per_example = [], {}
    for result in grid:
        metrics = dict(result.metrics or {})
        trial_id = str(metrics["trial_id"])
        params = {k: v for k, v in (result.config or {}).items() if isinstance(v, int | float | str)}
        finished = "completed" if metrics.get(FINAL_FLAG) == 1 else "stopped"
        status = "failed" if result.error is not None else finished
        values = numeric_metrics(metrics) if "elbo" in metrics else {}
        if status == "completed" and result.checkpoint is not None:
            arrays = load_per_example(Path(result.checkpoint.path) / PER_EXAMPLE_FILE)
            if arrays is not None:
                per_example[trial_id] = arrays
        run_id = live.tracker.child_run(trial_id, params, _trial_number(trial_id, result.path))
        model_uri = None
        if status != "failed" and values and result.checkpoint is not None and spec.mlflow.log_models:
            # Started by the callback when the trial ended; logged here if that did not happen (driver restarted).
            model_uri = live.tracker.model_uri(trial_id, params, Path(result.checkpoint.path) / CHECKPOINT_FILE)
        outcome = TrialOutcome(
            trial_id=trial_id,
            number=_trial_number(trial_id, result.path),
            status=status,
            params=params,
            metrics=values,
            error=error_summary(str(result.error)) if result.error is not None else None,
            attempts=max(1, attempts(live.audit_dir, trial_id)),
            train_seconds=values.get("train_seconds"),
            mlflow_run_id=run_id,
            model_uri=model_uri,
            epochs=int(values.get("epoch", 0)),
        )
        outcomes.append(annotate(spec, outcome))
    return sorted(outcomes, key=lambda t: t.number), per_example


def run_sweep(
    spec: SweepSpec,
    *,
    sweep_id: str | None = None,
    storage_root: str | Path | None = None,
    ray_address: str | None = None,
    tracking_uri: str | None = None,
    on_progress: Callable[[SweepProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SweepResult:
    """Run (or resume, when `storage_root/sweep_id` holds its state) a sweep and return trials and selection.

    Ray: `ray_address`, else $RAY_ADDRESS, else a local loopback-only Ray. MLflow: `tracking_uri`, else
    $MLFLOW_TRACKING_URI, else sqlite:///.rdvae/mlflow.db. `should_stop()` is polled to cancel the sweep;
    `on_progress` receives a SweepProgress after every trial event.
    """
    started = time.perf_counter()
    sweep_id = sweep_id or new_sweep_id(spec)
    check_sweep_id(sweep_id)
    root = resolve_storage_root(storage_root)
    sweep_dir = root / sweep_id
    dataset = checked_or_spec_error(spec)  # refused here, before Ray starts or the spec is pinned
    _pin_spec(spec, sweep_dir)
    audit_dir = sweep_dir / _AUDIT_DIR
    # Save the experiment state after every event (Tune's default is every >= 10 s), so that a driver killed
    # right after a trial finished does not run that trial again on resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.ERROR)
    _quiet()
    owns_ray = connect_ray(ray_address)
    tracker: SweepTracker | None = None
    try:
        tracker = SweepTracker(spec, sweep_id, sweep_dir, tracking_uri)
        live = LiveSweep(spec, sweep_id, tracker, audit_dir, on_progress=on_progress, should_stop=should_stop)
        LIVE[sweep_id] = live
        data = load_data(spec.dataset)
        log_dataset(tracker.client, tracker.parent_run_id, dataset, data.train.numpy())
        grid = _tuner(spec, sweep_id, root, audit_dir, data).fit()
        trials, per_example = (cohort_outcomes if spec.cohort_size > 1 else _outcomes)(spec, grid, live)
        selection = select(spec, trials, per_example)
        png = render_rd_plane(trials, selection, title=_plot_title(spec, sweep_id))
        result = SweepResult(
            name=spec.name or sweep_id,
            sweep_id=sweep_id,
            trials=trials,
            selection=selection,
            mlflow_parent_run_id=tracker.parent_run_id,
            mlflow_experiment_id=tracker.experiment_id,
            plot_path=str(sweep_dir / "rd_plane.png"),
            cancelled=live.cancelled,
            wall_seconds=time.perf_counter() - started,
            storage_path=str(sweep_dir),
            dataset=dataset,
        )
        tracker.finish(result, png)
        (sweep_dir / _RESULT_FILE).write_text(result.model_dump_json(indent=2))
        if on_progress is not None:
            on_progress(_final_progress(spec, result))
        return result
    finally:
        LIVE.pop(sweep_id, None)
        if tracker is not None:
            tracker.close()
        if owns_ray:
            ray.shutdown()


def _plot_title(spec: SweepSpec, sweep_id: str) -> str:
    data = spec.dataset
    source = data.path if data.name == "file" else data.name
    return f"{spec.name or sweep_id} · {source} ({data.binarization} binarisation) · held-out validation"


def _quiet() -> None:
    """Less log noise in the driver log: no Tune console box or TensorBoard hint (progress goes to the progress
    file and MLflow), no per-model pickle warning (the pickled model and its code are what we ship on purpose)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _final_progress(spec: SweepSpec, result: SweepResult) -> SweepProgress:
    trials = result.trials
    elbos = [t.metrics["elbo"] for t in trials if "elbo" in t.metrics]
    return SweepProgress(
        total=spec.n_trials,
        completed=sum(t.status == "completed" for t in trials),
        stopped=sum(t.status == "stopped" for t in trials),
        failed=sum(t.status == "failed" for t in trials),
        collapsed=sum(bool(t.collapsed) for t in trials),
        best_elbo=max(elbos, default=None),
        finished=[t.trial_id for t in trials],
        sweep_id=result.sweep_id,
        mlflow_parent_run_id=result.mlflow_parent_run_id,
        mlflow_experiment_id=result.mlflow_experiment_id,
        trials=trials,
    )
