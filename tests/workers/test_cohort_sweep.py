"""Cohorts as Ray Tune trials: the searcher's K asks and one tell per member, the per-member stop rules, and real
cohort sweeps on digits (Ray head, MLflow server) whose members are rows of the sweep."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient
from optuna.trial import TrialState
from pydantic import ValidationError
from ray import cloudpickle
from ray.tune.experiment import Trial
from ray.tune.search import Searcher

from workers import SweepResult, SweepSpec, run_sweep
from workers.cohort_search import CohortOptunaSearch, member_constraint_values
from workers.cohort_trainable import MEMBER_REPORTS, MemberJudge, SuccessiveHalving, cohort_members, member_statuses
from workers.search import constraint_count
from workers.spec import EarlyStopping, SpecError, parse_spec
from workers.stoppers import CollapseStopper

SPEC = SweepSpec.model_validate(
    {
        "name": "cohorts",
        "dataset": "digits",
        "model": {"latent_dim": 4, "hidden_dims": [32]},
        "search_space": {"beta": {"low": 0.1, "high": 4.0}},
        "n_trials": 6,
        "cohort_size": 3,
        "max_concurrent_trials": 3,
        "epochs": 2,
        "iwae_samples": 5,
        "objectives": [{"metric": "elbo"}, {"metric": "active_units"}],
        "constraints": [{"metric": "active_units", "op": ">=", "value": 1}],
        "sampler": "nsga2",
        "mlflow": {"experiment_name": "cohorts"},
    }
)


def _final(elbo: float, active_units: float = 3.0) -> dict[str, float]:
    metrics = {"elbo": elbo, "active_units": active_units, "rate": 5.0, "collapsed": 0.0, "final": 1, "epoch": 2}
    metrics.update({f"constraint_{i}": v for i, v in enumerate(SPEC.constraint_violations(metrics))})
    return metrics


def _result(reports: list[dict]) -> dict:
    return {MEMBER_REPORTS: json.dumps(reports), "final": 1}


def test_cohort_size_is_validated() -> None:
    assert SweepSpec().cohort_size == 1
    for bad in (0, 1025, 2.5):
        with pytest.raises(SpecError, match="cohort_size"):
            parse_spec({"cohort_size": bad})
    with pytest.raises(ValidationError):
        SweepSpec.model_validate({"cohort_size": -1})


def test_the_searcher_asks_cohorts_and_tells_every_member_once() -> None:
    spec = SPEC.model_copy(update={"n_trials": 7})
    search = CohortOptunaSearch(spec)
    cohorts = {tid: cohort_members(search.suggest(tid)) for tid in ("a", "b", "c")}
    assert [len(members) for members in cohorts.values()] == [3, 3, 1]
    assert search.suggest("d") == Searcher.FINISHED
    numbers = [m["number"] for members in cohorts.values() for m in members]
    assert sorted(numbers) == list(range(7))
    assert all(0.1 <= m["params"]["beta"] <= 4.0 for members in cohorts.values() for m in members)
    # a restored Tune trial asks again for its own cohort and gets the same members
    assert cohort_members(search.suggest("a")) == cohorts["a"]

    completed = {"status": "completed", "metrics": _final(-100.0), "error": None}
    collapsed = {"status": "completed", "metrics": _final(-90.0, active_units=0.0), "error": None}
    stopped = {"status": "stopped", "metrics": {"elbo": -120.0, "active_units": 2.0, "epoch": 1}, "error": None}
    failed = {"status": "failed", "metrics": {}, "error": "FloatingPointError: diverged"}
    cut_off = {"status": "stopped", "metrics": {}, "error": None}
    search.on_trial_complete("a", _result([completed, collapsed, stopped]))
    search.on_trial_complete("b", _result([failed, cut_off, completed]))
    search.on_trial_complete("c", None, error=True)  # the cohort's process crashed before any report
    search.on_trial_complete("a", _result([failed, failed, failed]))  # told already: ignored

    trials = {t.number: t for t in search.study.get_trials()}
    assert len(trials) == 7
    by_member = dict(zip(numbers, [completed, collapsed, stopped, failed, cut_off, completed, None], strict=True))
    expected = {0: TrialState.COMPLETE, 1: TrialState.COMPLETE, 2: TrialState.COMPLETE}
    expected.update({3: TrialState.FAIL, 4: TrialState.PRUNED, 5: TrialState.COMPLETE, 6: TrialState.FAIL})
    for number, state in expected.items():
        assert trials[number].state == state, (number, by_member[number])
    assert trials[0].values == [-100.0, 3.0] and trials[2].values == [-120.0, 2.0]
    # constraint values reach the sampler: the collapsed member is infeasible, the stopped one computed from
    # its last metrics, a crashed member has none
    assert len(trials[0].constraints) == constraint_count(spec)
    assert all(v <= 0 for v in trials[0].constraints.values())
    assert any(v > 0 for v in trials[1].constraints.values())
    assert trials[2].constraints == {
        f"constraint_{i}": v for i, v in enumerate(member_constraint_values(spec, stopped["metrics"]))
    }
    assert trials[6].constraints == {}


def test_members_of_different_architectures_go_to_separate_cohorts() -> None:
    spec = SPEC.model_copy(
        update={
            "n_trials": 9,
            "cohort_size": 4,
            "search_space": SPEC.search_space.model_copy(update={"latent_dim": [2, 3]}),
        }
    )
    search = CohortOptunaSearch(spec)
    cohorts = []
    for index in range(spec.n_trials + 1):
        suggestion = search.suggest(f"t{index}")
        if suggestion == Searcher.FINISHED:
            break
        cohorts.append(cohort_members(suggestion))
    assert sum(len(members) for members in cohorts) == 9
    assert all(len(members) <= 4 for members in cohorts)
    assert len(cohorts) >= 3  # 9 members in cohorts of 4 of one latent size each
    for members in cohorts:
        assert len({m["params"]["latent_dim"] for m in members}) == 1
    assert sorted(m["number"] for members in cohorts for m in members) == list(range(9))


def test_successive_halving_follows_ashas_rungs_and_cut_off() -> None:
    halving = SuccessiveHalving(grace_period=1, reduction_factor=2.0, max_t=5)
    assert [milestone for milestone, _ in halving.rungs] == [4.0, 2.0, 1.0]
    assert [halving.should_stop(m, 1, elbo) for m, elbo in enumerate([-10.0, -20.0, -5.0, -30.0])] == [
        False,  # nothing recorded yet at the rung
        True,  # below the median of {-10}
        False,
        True,
    ]
    assert halving.should_stop(0, 2, -10.0) is False
    assert halving.should_stop(2, 2, -12.0) is True  # rung 2 holds -10: -12 is below it
    assert halving.should_stop(2, 3, -1.0) is False  # no new rung reached at epoch 3


# --- real cohort sweeps: Ray head from `ray start`, MLflow server --------------------------------------------------


@pytest.fixture(scope="module")
def sweep(ray_cluster: str, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SweepResult]:
    yield run_sweep(
        SPEC,
        sweep_id="cohorts",
        storage_root=tmp_path_factory.mktemp("sweeps"),
        ray_address=ray_cluster,
        tracking_uri=mlflow_server,
    )


@pytest.mark.slow
def test_a_cohort_sweep_has_one_row_per_member(sweep: SweepResult) -> None:
    assert len(sweep.trials) == SPEC.n_trials
    assert sorted(t.number for t in sweep.trials) == list(range(SPEC.n_trials))
    assert len({t.trial_id for t in sweep.trials}) == SPEC.n_trials
    tune_trials = {t.trial_id.rsplit("-m", 1)[0] for t in sweep.trials}
    assert len(tune_trials) == SPEC.n_trials // SPEC.cohort_size
    for trial in sweep.trials:
        assert trial.status == "completed" and trial.epochs == SPEC.epochs
        assert {"elbo", "rate", "distortion", "iwae_ll", "test_elbo", "constraint_0"} <= set(trial.metrics)
        assert trial.model_uri is not None and trial.mlflow_run_id is not None
    assert sweep.selection.recommended is not None and sweep.selection.front
    # each member's folder in its cohort's final checkpoint: fit's model file and the per-example bounds
    for name in ("model.pt", "per_example.npz"):
        assert len(list(Path(sweep.storage_path).glob(f"*/checkpoint_*/member-000[0-2]/{name}"))) == SPEC.n_trials
    assert Path(sweep.plot_path).is_file()


@pytest.mark.slow
def test_each_member_is_an_mlflow_child_run_with_per_epoch_metrics(sweep: SweepResult, mlflow_server: str) -> None:
    client = MlflowClient(mlflow_server)
    children = client.search_runs(
        [sweep.mlflow_experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{sweep.mlflow_parent_run_id}'"
    )
    assert sorted(run.data.tags["rdvae.trial_id"] for run in children) == sorted(t.trial_id for t in sweep.trials)
    by_id = {t.trial_id: t for t in sweep.trials}
    for child in children:
        trial = by_id[child.data.tags["rdvae.trial_id"]]
        assert child.info.status == "FINISHED" and child.data.tags["rdvae.status"] == "completed"
        assert float(child.data.params["beta"]) == pytest.approx(trial.params["beta"])
        assert "rdvae.model_uri" in child.data.tags
        history = client.get_metric_history(child.info.run_id, "rate")
        assert {m.step for m in history} == {1, 2}
        assert child.data.metrics["iwae_ll"] == pytest.approx(trial.metrics["iwae_ll"])


@pytest.mark.slow
def test_the_optuna_study_was_told_each_member_once(sweep: SweepResult) -> None:
    search = CohortOptunaSearch(SPEC)
    search.restore_from_dir(sweep.storage_path)
    studied = search.study.get_trials()
    assert len(studied) == SPEC.n_trials
    assert all(t.state == TrialState.COMPLETE for t in studied)
    by_number = {t.number: t for t in sweep.trials}
    for ot_trial in studied:
        trial = by_number[ot_trial.number]
        assert ot_trial.values == [trial.metrics["elbo"], trial.metrics["active_units"]]
        assert ot_trial.params["beta"] == pytest.approx(trial.params["beta"])
        assert len(ot_trial.constraints) == constraint_count(SPEC)


def _diverge_middle_betas() -> None:
    # Worker setup hook: members with 50 < beta < 100 train at a learning rate no spec allows, and diverge to NaN.
    import workers.cohort_trainable as trainable

    real = trainable.run_config

    def diverging(spec, params, device="cpu"):  # noqa: ANN001, ANN202 - the signature of run_config
        config = real(spec, params, device)
        if 50.0 < float(params.get("beta", 0.0)) < 100.0:
            return config.model_copy(update={"train": config.train.model_copy(update={"learning_rate": 1e30})})
        return config

    trainable.run_config = diverging


@pytest.mark.slow
def test_inside_a_tune_cohort_a_diverging_member_fails_and_a_collapsed_one_stops_alone(
    ray_cluster: str, mlflow_server: str, tmp_path: Path
) -> None:
    spec = SweepSpec.model_validate(
        {
            **SPEC.model_dump(),
            "name": "cohort-alone",
            "n_trials": 3,
            "cohort_size": 3,
            "epochs": 2,
            "sampler": "grid",
            "grid_points": 3,  # beta 0.5 (healthy), 70.7 (made to diverge), 1e4 (collapses in epoch 1)
            "search_space": {"beta": {"low": 0.5, "high": 1e4}},
            "early_stopping": {"stop_collapsed": True, "collapse_warmup_epochs": 1},
        }
    )
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(address=ray_cluster, runtime_env={"worker_process_setup_hook": _diverge_middle_betas})
    try:
        result = run_sweep(spec, sweep_id="cohort-alone", storage_root=tmp_path, tracking_uri=mlflow_server)
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    healthy, failed, collapsed = sorted(result.trials, key=lambda t: t.params["beta"])
    assert len({t.trial_id.rsplit("-m", 1)[0] for t in result.trials}) == 1  # one Tune trial
    assert failed.status == "failed" and (failed.error or "").startswith("non-finite training loss at epoch 1")
    assert failed.feasible is False and failed.model_uri is None
    assert collapsed.status == "stopped" and collapsed.epochs == 1 and collapsed.collapsed
    assert "iwae_ll" not in collapsed.metrics and collapsed.model_uri is not None  # censored, like a stopped trial
    assert healthy.status == "completed" and healthy.epochs == 2 and "iwae_ll" in healthy.metrics
    assert result.selection.censored_trials == [collapsed.number]
    client = MlflowClient(mlflow_server)
    runs = {t.params["beta"]: client.get_run(t.mlflow_run_id) for t in result.trials}
    assert [runs[t.params["beta"]].info.status for t in (healthy, failed, collapsed)] == [
        "FINISHED",
        "FAILED",
        "FINISHED",
    ]
    assert [runs[t.params["beta"]].data.tags["rdvae.status"] for t in (healthy, failed, collapsed)] == [
        "completed",
        "failed",
        "stopped",
    ]
    search = CohortOptunaSearch(spec)
    search.restore_from_dir(result.storage_path)
    states = {t.number: t.state for t in search.study.get_trials()}
    # as ConstrainedOptunaSearch tells a stopped trial: COMPLETE with its last epoch's values, infeasible
    assert states == {
        healthy.number: TrialState.COMPLETE,
        failed.number: TrialState.FAIL,
        collapsed.number: TrialState.COMPLETE,
    }
    stopped = next(t for t in search.study.get_trials() if t.number == collapsed.number)
    assert stopped.values == [collapsed.metrics["elbo"], collapsed.metrics["active_units"]]
    assert any(v > 0 for v in stopped.constraints.values())


@pytest.mark.slow
def test_a_killed_driver_resumes_cohorts_keeping_finished_members(
    tmp_path: Path, ray_cluster: str, mlflow_server: str
) -> None:
    from test_workers_cli import progress_lines, spec_dict, start_driver, wait_for

    spec = spec_dict("cohort-resume", epochs=20, cohort_size=3, max_concurrent_trials=3)
    sweep_dir = tmp_path / "sweeps" / "cohort-resume"

    def second_cohort_checkpointed() -> bool:
        finished = (progress_lines(tmp_path) or [{}])[-1].get("finished", [])
        done = {member.rsplit("-m", 1)[0] for member in finished}
        if len(finished) < 3:
            return False
        running = [d for d in sweep_dir.glob("train_cohort_*") if not any(f"_{tid}_" in d.name for tid in done)]
        return any(list(d.glob("checkpoint_*")) for d in running)

    driver = start_driver(tmp_path, spec, ray_cluster, mlflow_server)
    try:
        wait_for(second_cohort_checkpointed, driver)
        finished_before = set(progress_lines(tmp_path)[-1]["finished"])
        time.sleep(1.0)  # let Tune write the experiment state that records the first cohort as finished
        assert driver.poll() is None, "the sweep finished before it could be interrupted"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert len(finished_before) == 3
    resumed = start_driver(tmp_path, spec, ray_cluster, mlflow_server)
    assert resumed.wait(timeout=240) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    result = SweepResult.model_validate_json((tmp_path / "result.json").read_text())
    assert sorted(t.number for t in result.trials) == list(range(6))
    assert all(t.status == "completed" and t.epochs == 20 for t in result.trials)
    by_id = {t.trial_id: t for t in result.trials}
    assert all(by_id[member].attempts == 1 for member in finished_before), "a finished cohort ran again"
    second = [t for t in result.trials if t.trial_id not in finished_before]
    assert len(second) == 3 and all(t.attempts == 2 for t in second)
    starts = [json.loads(line) for line in (sweep_dir / "starts" / f"{second[0].trial_id.rsplit('-m', 1)[0]}.jsonl")
              .read_text().splitlines()]  # fmt: skip
    assert starts[0]["resumed_from_epoch"] == 0 and starts[1]["resumed_from_epoch"] >= 1
    search = CohortOptunaSearch(SweepSpec.model_validate(spec))
    search.restore_from_dir(str(sweep_dir))
    assert sorted(t.number for t in search.study.get_trials()) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in search.study.get_trials())
    children = MlflowClient(mlflow_server).search_runs(
        [result.mlflow_experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.mlflow_parent_run_id}'"
    )
    assert sorted(run.data.tags["rdvae.trial_id"] for run in children) == sorted(by_id)


def test_members_are_judged_by_the_collapse_stoppers_rule_and_by_halving() -> None:
    spec = SPEC.model_copy(
        update={
            "early_stopping": EarlyStopping(stop_collapsed=True, collapse_warmup_epochs=2, asha=True, grace_period=2)
        }
    )
    judge = MemberJudge(spec, n_train=1000)
    stopper = CollapseStopper(2, spec.collapse_rate_threshold)
    collapsed = {"epoch": 2.0, "rate": 0.01, "elbo": -50.0, "annealing": 0.0, "final": 0}
    for record in (collapsed, {**collapsed, "epoch": 1.0}, {**collapsed, "annealing": 1.0}, {**collapsed, "rate": 3.0}):
        assert judge.collapse_stops(record) == stopper("trial", record)
    assert judge(0, collapsed) is True  # collapsed after warm-up (and first at its rung)
    assert judge(1, {**collapsed, "rate": 3.0, "elbo": -60.0}) is True  # healthy, but below member 0 at rung 2
    assert judge(2, {**collapsed, "rate": 3.0, "elbo": -40.0}) is False
    off = MemberJudge(SPEC, n_train=1000)  # neither rule asked for
    assert off(0, collapsed) is False and off.halving is None


def test_member_statuses_follow_the_cohorts_end() -> None:
    reports = [
        {"status": "completed", "metrics": {"elbo": -1.0}},
        {"status": "failed", "metrics": {}},
        {"status": "stopped", "metrics": {"elbo": -2.0}},
        {"status": "running", "metrics": {"elbo": -3.0}},
    ]
    final, epoch = {**_result(reports), "final": 1}, {**_result(reports), "final": 0}
    assert member_statuses(Trial.TERMINATED, final, 4) == ["completed", "failed", "stopped", "stopped"]
    # cancelled: no final report, the members that were still training count as stopped (censored)
    assert member_statuses(Trial.TERMINATED, epoch, 4)[3] == "stopped"
    # crashed (after its retries) before its final report: no member's result is final, all fail with the cohort;
    # after it (a teardown error), the members keep how they ended
    assert member_statuses(Trial.ERROR, epoch, 4) == ["failed"] * 4
    assert member_statuses(Trial.ERROR, final, 4) == ["completed", "failed", "stopped", "failed"]
    assert member_statuses(Trial.ERROR, None, 2) == ["failed", "failed"]
    assert member_statuses(Trial.RUNNING, epoch, 4)[3] == "running"


def test_tpe_asks_its_batches_with_the_constant_liar_and_hears_every_member() -> None:
    spec = SPEC.model_copy(update={"sampler": "tpe", "n_trials": 12, "cohort_size": 4})
    search = CohortOptunaSearch(spec)
    assert search.study.sampler._constant_liar is True  # a batch of K asks sees the K - 1 before it as pending
    for index in range(3):
        members = cohort_members(search.suggest(f"t{index}"))
        assert len({m["params"]["beta"] for m in members}) == 4
        reports = [
            {"status": "completed", "metrics": _final(-100.0 - m["params"]["beta"]), "error": None} for m in members
        ]
        search.on_trial_complete(f"t{index}", _result(reports))
    assert search.suggest("t3") == Searcher.FINISHED
    trials = search.study.get_trials()
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
