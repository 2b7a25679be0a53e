"""The Ray Tune trainable of a cohort sweep: one Tune trial trains K sampled trials at once with `rdvae.fit_cohort`.

Each member keeps what a trial of its own would have: its run config (`workers.trainable.run_config`), per-epoch
held-out metrics, the collapse stopper's rule and successive halving on held-out ELBO (see `SuccessiveHalving`),
its final metrics with the constraint values, its model (`model.pt`) and per-example bounds (`per_example.npz`)
in a folder of its own inside the cohort's checkpoint. Members travel in the Tune config and in every report as
JSON strings: Tune flattens nested results, a string it leaves as it is.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from rdvae import DataSplits, save_checkpoint
from rdvae.cohort import COHORT_CHECKPOINT, MemberResult, fit_cohort
from workers.budget import anneal_end_epoch
from workers.spec import SweepSpec
from workers.stoppers import collapsed_after_warmup
from workers.storage import checkpoint_directory
from workers.trainable import CHECKPOINT_FILE, FINAL_FLAG, PER_EXAMPLE_FILE, _record_start, run_config, save_per_example

MEMBERS_KEY = "members"  # config: JSON list of {"number": Optuna trial number, "params": sampled params}
MEMBER_REPORTS = "member_reports"  # result: JSON list of {"status", "metrics", "error"}, one per member
EPOCH_RECORDS = "epoch_records"  # result: JSON {member index: record} of the members evaluated this epoch
ERROR, TERMINATED = "ERROR", "TERMINATED"  # Tune's trial statuses (ray.tune.experiment.Trial)
# A cohort checkpoint holds K models and their Adam states (K = 128 MLP VAEs: ~0.5 GB), more than an epoch on a GPU
# costs: written and handed to Tune at most this often (and when members finish); a resume repeats at most this.
CHECKPOINT_SECONDS = 30.0


def member_dir(index: int) -> str:
    """The folder of member `index` inside a cohort checkpoint (its `model.pt` and `per_example.npz`)."""
    return f"member-{index:04d}"


def cohort_config(members: list[dict[str, Any]]) -> dict[str, str]:
    """The Tune config of a cohort from its members' {"number", "params"}."""
    return {MEMBERS_KEY: json.dumps(members)}


def cohort_members(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The members a cohort's Tune config holds: [{"number": int, "params": {...}}, ...]."""
    return json.loads(config[MEMBERS_KEY])


def member_reports(result: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The per-member reports of a cohort's Tune result (None before its first report)."""
    if not result or not isinstance(result.get(MEMBER_REPORTS), str):
        return None
    return json.loads(result[MEMBER_REPORTS])


def member_statuses(trial_status: str, result: dict[str, Any] | None, size: int) -> list[str]:
    """Each member's status from its cohort's Tune status and last result: a cohort that crashed fails its
    unfinished members; one ended without its final report (cancelled) leaves them stopped, like a trial of its
    own without its final report; a running cohort's unfinished members are running."""
    reports = member_reports(result) or [{"status": "running"} for _ in range(size)]
    final = bool(result) and result.get(FINAL_FLAG) == 1
    statuses = []
    for report in reports:
        status = report["status"]
        if status == "running" or (status != "failed" and not final and trial_status == ERROR):
            status = {ERROR: "failed", TERMINATED: "stopped"}.get(trial_status, "running")
        statuses.append(status)
    return statuses


class SuccessiveHalving:
    """Per-member asynchronous successive halving on held-out ELBO, at the rungs of Tune's ASHAScheduler.

    Rungs at grace_period * reduction_factor**k epochs below max_t; a member reaching a rung stops when its ELBO is
    below the (1 - 1/reduction_factor) quantile of the ELBOs recorded at that rung so far — Ray's rule, with the
    members of this cohort as the population (in member order within an epoch; other cohorts are not seen).
    """

    def __init__(self, grace_period: int, reduction_factor: float, max_t: int) -> None:
        self.reduction_factor = reduction_factor
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        self.rungs: list[tuple[float, dict[int, float]]] = [
            (grace_period * reduction_factor**k, {}) for k in reversed(range(count))
        ]

    def should_stop(self, member: int, epoch: int, elbo: float) -> bool:
        """Record `member`'s ELBO at the highest rung it just reached; True when it falls below the cut-off."""
        for milestone, recorded in self.rungs:
            if epoch < milestone or member in recorded:
                continue
            values = [v for v in recorded.values() if math.isfinite(v)]
            stop = bool(values) and elbo < float(torch.tensor(values).double().quantile(1 - 1 / self.reduction_factor))
            recorded[member] = elbo
            return stop
        return False


class MemberJudge:
    """The per-member stop rules of the spec: the collapse stopper and successive halving."""

    def __init__(self, spec: SweepSpec, n_train: int) -> None:
        stopping = spec.early_stopping
        self.spec = spec
        self.collapse = stopping.stop_collapsed and spec.asks_for_non_collapse()
        self.halving: SuccessiveHalving | None = None
        if stopping.asha:
            # As the driver's ASHAScheduler: no rung before the capacity ramp ends; max_t one past the last epoch.
            grace = min(max(stopping.grace_period, anneal_end_epoch(spec, n_train)), spec.epochs)
            self.halving = SuccessiveHalving(grace, stopping.reduction_factor, spec.epochs + 1)

    def collapse_stops(self, record: dict[str, float]) -> bool:
        """The collapse stopper's rule (`workers.stoppers.collapsed_after_warmup`) on a member's epoch record."""
        warmup, threshold = self.spec.early_stopping.collapse_warmup_epochs, self.spec.collapse_rate_threshold
        return collapsed_after_warmup(record, warmup, threshold)

    def __call__(self, member: int, record: dict[str, float]) -> bool:
        stop = self.collapse and self.collapse_stops(record)
        if self.halving is not None:
            stop = self.halving.should_stop(member, int(record["epoch"]), float(record["elbo"])) or stop
        return stop

    def replay(self, histories: list[list[dict[str, float]]]) -> None:
        """Rebuild the rung records from the members' histories of a resumed cohort."""
        if self.halving is None:
            return
        for epoch in sorted({int(r["epoch"]) for history in histories for r in history}):
            for member, history in enumerate(histories):
                for record in history:
                    if int(record["epoch"]) == epoch:
                        self.halving.should_stop(member, epoch, float(record["elbo"]))


def _member_final(
    spec: SweepSpec, member: MemberResult, annealing_until: int, reported: dict[str, Any]
) -> dict[str, Any]:
    # What a trial of its own would report last: the final metrics when it completed, its last epoch's when it was
    # stopped (censored), the last epoch's (if any) and the error when it failed.
    last = dict(member.history[-1]) if member.history else dict(reported.get("metrics") or {})
    if last:
        last.update({"annealing": float(last["epoch"] < annealing_until), FINAL_FLAG: 0})
    if member.status != "completed":
        return {"status": member.status, "metrics": last, "error": member.error}
    assert member.validation is not None and member.test is not None
    final = member.validation.as_dict()
    violations = spec.constraint_violations(final)
    final.update({f"constraint_{index}": value for index, value in enumerate(violations)})
    final.update({f"test_{key}": value for key, value in member.test.as_dict().items()})
    final.update({"epoch": spec.epochs, FINAL_FLAG: 1, "train_seconds": member.train_seconds})
    return {"status": "completed", "metrics": final, "error": None}


def _write_member_dirs(directory: Path, members: list[MemberResult]) -> None:
    # The final weights in fit's checkpoint format (without optimiser state: the cohort checkpoint resumes).
    for index, member in enumerate(members):
        if member.status == "failed" or not member.history:
            continue
        folder = directory / member_dir(index)
        folder.mkdir(exist_ok=True)
        save_checkpoint(folder / CHECKPOINT_FILE, member.model, member.config, epoch=int(member.history[-1]["epoch"]))
        if member.validation is not None:
            save_per_example(folder / PER_EXAMPLE_FILE, member.validation)


class _ReportedCheckpoints:
    """What a cohort hands Tune: the cohort checkpoint when fit_cohort rewrote it since the last report (at most
    every CHECKPOINT_SECONDS), and at the end the member folders. Tune copies each into the sweep's storage, so a
    fresh folder per report holds a hard link to the file, not the training folder itself."""

    def __init__(self, workdir: Path, cohort_file: Path) -> None:
        self.workdir, self.cohort_file = workdir, cohort_file
        self.seen: int | None = cohort_file.stat().st_mtime_ns if cohort_file.is_file() else None
        self.count = 0

    def folder(self, members: list[MemberResult] | None = None) -> Path | None:
        written = self.cohort_file.stat().st_mtime_ns if self.cohort_file.is_file() else None
        if members is None and written == self.seen:
            return None
        self.seen, self.count = written, self.count + 1
        folder = self.workdir / f"report-{self.count:06d}"
        folder.mkdir()
        if written is not None:
            try:
                os.link(self.cohort_file, folder / COHORT_CHECKPOINT)
            except OSError:
                shutil.copyfile(self.cohort_file, folder / COHORT_CHECKPOINT)
        if members is not None:
            _write_member_dirs(folder, members)
        return folder


def _resume_point(checkpoint_dir: Path) -> tuple[Path | None, int, list[list[dict[str, float]]]]:
    # Copy out of Tune's directory (the next report may rotate it); the cohort checkpoint says where it was.
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, 0, []
    with checkpoint_directory(checkpoint) as directory:
        shutil.copytree(directory, checkpoint_dir, dirs_exist_ok=True)
    path = checkpoint_dir / COHORT_CHECKPOINT
    if not path.is_file():
        return None, 0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    return path, int(state["epoch"]), [record["history"] for record in json.loads(state["members"])]


def train_cohort(config: dict[str, Any], *, spec_json: str, data: DataSplits, audit_dir: str) -> None:
    """Tune function trainable of one cohort. Reports once per epoch (the members evaluated in it), and last a
    report with `final` = 1 and every member's final metrics; resumes from the cohort checkpoint Tune kept."""
    started = time.perf_counter()
    spec = SweepSpec.model_validate_json(spec_json)
    members = cohort_members(config)
    device = "cuda" if ray.get_gpu_ids() else "cpu"
    configs = [run_config(spec, member["params"], device) for member in members]
    n_train = int(data.train.shape[0])
    anneal_end = anneal_end_epoch(spec, n_train)
    annealing_until = [anneal_end if m["params"].get("objective", "beta") == "capacity" else 0 for m in members]
    workdir = Path(tempfile.mkdtemp(prefix="rdvae-cohort-"))
    checkpoint_dir = workdir / "checkpoint"
    checkpoint_dir.mkdir()
    resume_from, resumed_epoch, histories = _resume_point(checkpoint_dir)
    checkpoints = _ReportedCheckpoints(workdir, checkpoint_dir / COHORT_CHECKPOINT)
    _record_start(audit_dir, tune.get_context().get_trial_id(), resumed_epoch)
    judge = MemberJudge(spec, n_train)
    judge.replay(histories)
    reports: list[dict[str, Any]] = [
        {"status": "running", "metrics": dict(history[-1]) if history else {}, "error": None}
        for history in (histories or [[] for _ in members])
    ]
    pending: dict[int, dict[str, float]] = {}

    def report(members: list[MemberResult] | None = None, **extra: float) -> None:
        final = members is not None
        result = {MEMBER_REPORTS: json.dumps(reports), EPOCH_RECORDS: json.dumps(pending), FINAL_FLAG: int(final)}
        epochs = [int(r["epoch"]) for r in pending.values()]
        result["epoch"] = spec.epochs if final else max(epochs, default=resumed_epoch)
        folder = checkpoints.folder(members)
        checkpoint = None if folder is None else tune.Checkpoint.from_directory(folder)
        tune.report({**result, **extra}, checkpoint=checkpoint)
        if folder is not None and not final:
            shutil.rmtree(folder, ignore_errors=True)  # Tune holds its copy
        pending.clear()

    def on_member_epoch(member: int, epoch: int, record: dict[str, float]) -> bool:
        # fit_cohort calls this member by member; the epoch's report goes out when the next epoch begins, once the
        # cohort checkpoint of the finished epoch is written.
        if pending and epoch > max(int(r["epoch"]) for r in pending.values()):
            report()
        record = {**record, "epoch": float(epoch), "annealing": float(epoch < annealing_until[member]), FINAL_FLAG: 0}
        if epoch == spec.epochs:
            # As a trial of its own: the final report follows for this epoch (k-draw ELBO, IWAE, test metrics), one
            # record per (metric, epoch), and nothing judges a member that has reached its last epoch.
            reports[member] = {"status": "running", "metrics": record, "error": None}
            return False
        stop = judge(member, record)
        reports[member] = {"status": "stopped" if stop else "running", "metrics": record, "error": None}
        pending[member] = record
        return stop

    result = fit_cohort(
        configs,
        callback=on_member_epoch,
        data=data,
        resume_from=resume_from,
        checkpoint_dir=checkpoint_dir,
        checkpoint_seconds=CHECKPOINT_SECONDS,
    )
    if pending:
        report()
    for index, member in enumerate(result.members):
        reports[index] = _member_final(spec, member, annealing_until[index], reports[index])
    report(
        result.members,
        train_seconds=result.train_seconds,
        trial_seconds=time.perf_counter() - started,
        on_gpu=float(device == "cuda"),
        cohort_size=float(len(members)),
    )
