"""The runner: a queue of sweeps in the DB (started round-robin by owner, see service/queue/admission.py), at most
`max_running_sweeps` driver processes, crash recovery, and a start timeout for sweeps that never start a trial.

Each running sweep has one driver (`python -m workers run`) under a supervisor (`service.queue._supervise`) started in a
new session: drivers deliberately outlive the API process, so an API crash or redeploy does not kill Ray trials.
On start-up `reconcile` looks at every sweep the DB says is running: if its supervisor still holds the sweep's
lock, the runner re-attaches (keeps reading its progress/result files); if not, it reads the recorded exit code,
or — when the driver died without one — launches it again with the same sweep id and storage root, and `workers`
resumes from its Ray Tune / Optuna state. The lock guarantees exactly one driver per sweep.

Embedded mode (no RDVAE_RAY_ADDRESS): each driver starts its own local Ray; with the default of one running sweep
at a time that is one local Ray. Point RDVAE_RAY_ADDRESS at a head (`ray start --head`) to share a cluster.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from rdvae import DataError, DatasetInfo
from service._polling import PollingThread
from service.queue import store
from service.queue._supervise import EXIT_FILE, LOCK_FILE, LOG_FILE, PID_FILE
from service.queue.admission import fair_order
from service.queue.db import session_scope
from service.queue.verdict import no_success_error, one_line
from service.settings import Settings
from workers.budget import SpecFieldError, check_budget
from workers.datasets import check_sweep_data
from workers.results import SweepProgress, SweepResult
from workers.spec import SweepSpec

logger = logging.getLogger(__name__)

PROGRESS_FILE = "progress.jsonl"
RESULT_FILE = "result.json"
SPEC_FILE = "spec.json"
EXIT_CANCELLED = 3
EXIT_INVALID_SPEC = 2


class SpecRejectedError(ValueError):
    """A spec that parses but cannot run here (e.g. a dataset path outside the data root)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_spec(spec: SweepSpec, data_root: Path) -> DatasetInfo:
    """What a spec must satisfy to run here: a capacity ramp that reaches C; a data set that suits the model — a
    `file` must resolve inside the data root to a .npy/.npz/.h5ad whose header, size, shape, dtype and values suit
    the likelihood and conv layers (see rdvae.datafiles). Returns the data set's lineage (digest, shape, ...)."""
    try:
        check_budget(spec)
    except SpecFieldError as error:
        raise SpecRejectedError(f"body.{error.field}", error.reason) from error
    try:
        return check_sweep_data(spec, data_root)
    except DataError as error:
        raise SpecRejectedError(f"body.{error.field}", error.reason) from error


def submit_sweep(
    session: Session, spec: SweepSpec, *, owner: str, origin: str = "api", data_root: Path | None = None
) -> str:
    """Enqueue `spec` (FIFO) and return the sweep id; durable once `session` commits. Used by routes and scheduler."""
    return enqueue(session, spec, owner=owner, origin=origin, data_root=data_root).id


def enqueue(
    session: Session,
    spec: SweepSpec,
    *,
    owner: str,
    origin: str = "api",
    data_root: Path | None = None,
    dataset: DatasetInfo | None = None,
) -> store.Sweep:
    """`submit_sweep`, returning the new row; `dataset`: the result of `check_spec` when the caller ran it."""
    if dataset is None:
        dataset = check_spec(spec, data_root if data_root is not None else Settings().data_root)
    return store.create_sweep(session, spec, owner=owner, origin=origin, dataset=dataset)


def driver_alive(sweep_dir: Path) -> bool:
    """Whether a supervisor (or its driver) holds the sweep's lock."""
    lock_path = sweep_dir / LOCK_FILE
    if not lock_path.exists():
        return False
    descriptor = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(descriptor)  # closing releases a lock we may have taken
    return False


def read_last_progress(path: Path, tail_bytes: int = 65_536) -> SweepProgress | None:
    """The newest complete progress line (the driver appends; a torn last line is skipped)."""
    if not path.exists():
        return None
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(max(0, size - tail_bytes))
        lines = handle.read().splitlines()
    for line in reversed(lines):
        try:
            return SweepProgress.model_validate_json(line)
        except ValidationError:
            continue
    if size > tail_bytes:  # one line longer than the tail (huge sweeps list many finished trials)
        return read_last_progress(path, size)
    return None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _log_tail(path: Path, limit: int = 8000) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - limit))
        return handle.read().decode("utf-8", "replace").strip()


class Runner:
    """Polls the DB and the drivers every `poll_interval_s` in a background thread; all state lives in the DB."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session]) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self._lock = threading.Lock()
        self._poller = PollingThread("rdvae-runner", self._poll, lambda: self.settings.poll_interval_s, wait_first=True)
        self._term_sent: dict[str, float] = {}
        self._leader_lock: int | None = None

    def start(self) -> None:
        self.settings.sweeps_dir.mkdir(parents=True, exist_ok=True)
        if self._lead():
            self.tick()
        self._poller.start()

    def stop(self) -> None:
        """Stop polling; drivers keep running and are re-attached by the next runner."""
        self._poller.stop()
        if self._leader_lock is not None:
            os.close(self._leader_lock)
            self._leader_lock = None

    def _lead(self) -> bool:
        """Only one runner per state dir drives sweeps (several uvicorn workers: the others serve HTTP only and
        take over when the leader's process ends, since the OS drops its flock)."""
        if self._leader_lock is not None:
            return True
        descriptor = os.open(self.settings.sweeps_dir / "runner.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return False
        self._leader_lock = descriptor
        return True

    def wake(self) -> None:
        self._poller.wake()

    def _poll(self) -> None:
        if self._lead():
            self.tick()

    def sweep_dir(self, sweep_id: str) -> Path:
        return self.settings.sweeps_dir / sweep_id

    def tick(self) -> None:
        """Reconcile running sweeps with their drivers, then start queued ones while slots are free."""
        with self._lock, session_scope(self.session_factory) as session:
            for sweep in store.running_sweeps(session):
                self._check(session, sweep)
                session.commit()
            running = store.running_sweeps(session)
            slots = self.settings.max_running_sweeps - len(running)
            queued = store.queued_in_order(session) if slots > 0 else []
            served = store.last_started_by_owner(session, sorted({sweep.owner for sweep in queued}))
            for sweep in fair_order(queued, running, served)[: max(0, slots)]:
                if not store.claim_queued(session, sweep):
                    continue
                session.commit()  # claimed before launching: a crash in between means "resume", never "lost"
                self._launch(session, sweep)
                session.commit()

    def request_cancel(self, session: Session, sweep_id: str) -> str | None:
        """Queued: cancelled at once. Running: SIGTERM to its driver now; the runner records the outcome.

        Commits `session`. Returns the status the sweep had, or None when it had already finished."""
        previous = store.mark_cancel(session, sweep_id)
        session.commit()
        if previous == "running":
            with self._lock:
                self._term_sent.pop(sweep_id, None)
                self._escalate_cancel(sweep_id)
            self.wake()
        return previous

    def _signal(self, sweep_id: str, signum: int) -> None:
        directory = self.sweep_dir(sweep_id)
        pid = _read_int(directory / PID_FILE)
        if pid is None or not driver_alive(directory):
            return
        try:
            if signum == signal.SIGKILL:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            return

    def _driver_command(self, sweep: store.Sweep, directory: Path) -> list[str]:
        base = (
            shlex.split(self.settings.driver_command)
            if self.settings.driver_command
            else [sys.executable, "-m", "workers"]
        )
        command = [
            *base,
            "run",
            "--spec",
            str(directory / SPEC_FILE),
            "--sweep-id",
            sweep.id,
            "--storage-root",
            str(self.settings.ray_storage_root),
            "--tracking-uri",
            self.settings.resolved_tracking_uri,
            "--progress-file",
            str(directory / PROGRESS_FILE),
            "--result-file",
            str(directory / RESULT_FILE),
        ]
        if self.settings.ray_address:
            command += ["--ray-address", self.settings.ray_address]
        return command

    def _launch(self, session: Session, sweep: store.Sweep) -> None:
        directory = self.sweep_dir(sweep.id)
        directory.mkdir(parents=True, exist_ok=True)
        if driver_alive(directory):  # a driver for this sweep already runs: adopt it, never start a second
            return
        if sweep.launches >= self.settings.max_launches:
            self._finish(
                sweep,
                "failed",
                error=f"driver died {sweep.launches} times without an exit code; "
                f"last log line: {one_line(_log_tail(directory / LOG_FILE))}",
            )
            return
        sweep.launches += 1  # counted (committed) before the start: `driver_launches` counts attempts
        session.commit()
        (directory / SPEC_FILE).write_text(sweep.spec_json)
        (directory / EXIT_FILE).unlink(missing_ok=True)
        env = {
            **os.environ,
            "RDVAE_DATA_ROOT": str(self.settings.data_root.resolve()),
            "MLFLOW_TRACKING_URI": self.settings.resolved_tracking_uri,
        }
        if self.settings.ray_address:
            env["RAY_ADDRESS"] = self.settings.ray_address
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.queue._supervise",
                str(directory),
                "--",
                *self._driver_command(sweep, directory),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        threading.Thread(target=process.wait, daemon=True).start()  # reap it if it ends while we live
        sweep.driver_pid = process.pid
        logger.info("sweep %s: driver launch %d (pid %d)", sweep.id, sweep.launches, process.pid)
        self._await_lock(directory, process)

    @staticmethod
    def _await_lock(directory: Path, process: subprocess.Popen, timeout: float = 10.0) -> None:
        """Wait until the new supervisor holds the lock, so the next tick cannot mistake it for dead."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if driver_alive(directory) and _read_int(directory / PID_FILE) == process.pid:
                return
            time.sleep(0.02)

    def _check(self, session: Session, sweep: store.Sweep) -> None:
        directory = self.sweep_dir(sweep.id)
        progress = read_last_progress(directory / PROGRESS_FILE)
        if progress is not None:
            store.apply_progress(sweep, progress)
        if driver_alive(directory):
            if not sweep.cancel_requested and self._never_started_a_trial(sweep, progress):
                sweep.error = (
                    f"no trial started within {self.settings.trial_start_timeout_s:g} s (RDVAE_TRIAL_START_TIMEOUT_S): "
                    f"the cluster never granted the {sweep.spec.resources.cpus:g} CPUs / "
                    f"{sweep.spec.resources.gpus:g} GPUs a trial asks for, or it is busy"
                )
                sweep.cancel_requested = True
                logger.warning("sweep %s: %s", sweep.id, sweep.error)
            if sweep.cancel_requested:
                self._escalate_cancel(sweep.id)
            return
        self._term_sent.pop(sweep.id, None)
        code = _read_int(directory / EXIT_FILE)
        result = self._read_result(directory)
        if result is not None:
            store.apply_result(sweep, result)
            if store.dataset_changed(sweep.dataset, result.dataset):
                logger.warning("sweep %s: the driver trained on other data than was checked at submit", sweep.id)
        if sweep.cancel_requested and sweep.error:  # stopped by the runner (start timeout), not by a user
            self._finish(sweep, "failed", error=sweep.error)
        elif code == 0 and result is not None:
            if result.cancelled or sweep.cancel_requested:
                self._finish(sweep, "cancelled")
            else:
                failure = no_success_error(result)
                self._finish(sweep, "failed" if failure else "succeeded", error=failure)
        elif code == EXIT_CANCELLED or sweep.cancel_requested:
            self._finish(sweep, "cancelled")
        elif code == EXIT_INVALID_SPEC:
            reason = one_line(_log_tail(directory / LOG_FILE))
            self._finish(sweep, "failed", error=f"the driver rejected the spec: {reason}")
        elif code is not None and code < 128:
            reason = one_line(_log_tail(directory / LOG_FILE))
            self._finish(sweep, "failed", error=f"driver exited with {code}: {reason}")
        else:  # killed (signal, OOM, reboot) without a verdict: resume it
            logger.warning("sweep %s: driver gone without a verdict (exit %s); resuming", sweep.id, code)
            self._launch(session, sweep)

    def _never_started_a_trial(self, sweep: store.Sweep, progress: SweepProgress | None) -> bool:
        """Running longer than the start timeout (this launch included) without any trial having started."""
        started = sweep.started_at
        if started is None:
            return False
        started = started.replace(tzinfo=store.utcnow().tzinfo) if started.tzinfo is None else started
        if (store.utcnow() - started).total_seconds() < self.settings.trial_start_timeout_s:
            return False
        return progress is None or not (progress.trials or progress.running or progress.finished or progress.completed)

    def _escalate_cancel(self, sweep_id: str) -> None:
        """SIGTERM once (again after a restart, when this runner never sent it), SIGKILL after the grace period."""
        first = self._term_sent.get(sweep_id)
        if first is None:
            self._signal(sweep_id, signal.SIGTERM)
            self._term_sent[sweep_id] = time.monotonic()
        elif time.monotonic() - first > self.settings.cancel_grace_s:
            self._signal(sweep_id, signal.SIGKILL)

    @staticmethod
    def _read_result(directory: Path) -> SweepResult | None:
        try:
            return SweepResult.model_validate_json((directory / RESULT_FILE).read_bytes())
        except (FileNotFoundError, ValidationError):
            return None

    def _finish(self, sweep: store.Sweep, status: str, error: str | None = None) -> None:
        sweep.status = status
        sweep.error = error
        sweep.running = 0
        sweep.finished_at = store.utcnow()
        logger.info("sweep %s: %s", sweep.id, status)
