"""Terminal views of API answers for the CLI: sweep summary, live progress, Pareto table, schedules."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

FINISHED = ("succeeded", "failed", "cancelled")
PARAM_ORDER = ("objective", "beta", "C", "decoder", "latent_dim", "learning_rate")
METRICS = (
    ("elbo", "ELBO"),
    ("iwae_ll", "IWAE"),
    ("rate", "R"),
    ("distortion", "D"),
    ("active_units", "AU"),
    ("mutual_info", "MI"),
)


def _number(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def sweep_table(sweep: dict[str, Any]) -> Table:
    progress = sweep["progress"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("sweep", f"{sweep['id']}  {sweep.get('name') or ''}")
    table.add_row("status", sweep["status"] + (" (cancel requested)" if sweep.get("cancel_requested") else ""))
    done = progress.get("done", progress["completed"] + progress["failed"])
    table.add_row("trials", f"{done}/{progress['total']} done, {progress['running']} running, "
                            f"{progress['failed']} failed, {progress['collapsed']} collapsed")  # fmt: skip
    table.add_row("best ELBO", _number(sweep.get("best_elbo")))
    if sweep.get("queue_position"):
        table.add_row("queue", f"position {sweep['queue_position']}")
    if sweep.get("mlflow_parent_run_url"):
        table.add_row("MLflow", sweep["mlflow_parent_run_url"])
    if sweep.get("error"):
        table.add_row("error", sweep["error"].strip().splitlines()[-1])
    if sweep.get("dataset_changed"):
        submitted, trained = sweep["dataset"]["digest"], sweep["trained_on"]["digest"]
        table.add_row("data", f"changed after submit: checked {submitted[:19]}…, trained on {trained[:19]}…")
    return table


def phase(sweep: dict[str, Any]) -> str:
    """What the sweep is doing now, in words: queued (its place), starting, trials running, finishing, or done."""
    status, progress = sweep["status"], sweep["progress"]
    done = progress.get("done", progress["completed"] + progress["failed"])
    if status == "queued":
        return f"queued (position {sweep['queue_position']})" if sweep.get("queue_position") else "queued"
    if status != "running":
        return status
    if progress["running"]:
        first = done + 1
        last = done + progress["running"]
        return f"trial {first} running" if first == last else f"trials {first}-{last} running"
    if done == 0:
        return "starting (Ray, MLflow, first trial)"
    return "finishing (selection, plot, model registry)" if done >= progress["total"] else "between trials"


def trials_table(view: dict[str, Any]) -> Table:
    """One row per trial: number, status, sampled params, held-out metrics, error line."""
    table = Table(title=f"Trials of sweep {view['sweep_id']} ({view['status']})", caption="held-out nats")
    table.add_column("#", justify="right")
    table.add_column("status")
    table.add_column("params", overflow="fold", ratio=1)
    for _, title in METRICS:
        table.add_column(title, justify="right", no_wrap=True)
    table.add_column("epochs", justify="right")
    table.add_column("error", overflow="fold")
    for trial in view["trials"]:
        metrics = trial.get("metrics", {})
        table.add_row(str(trial["number"]), trial["status"], _params(trial),
                      *(_number(metrics.get(key)) for key, _ in METRICS), str(trial.get("epochs", 0)),
                      trial.get("error") or "")  # fmt: skip
    return table


def watch(fetch: Callable[[], dict[str, Any]], console: Console, interval: float = 1.0) -> dict[str, Any]:
    """A live bar (trials done/total, best ELBO so far, collapsed count) until the sweep finishes."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("best ELBO {task.fields[best]}  collapsed {task.fields[collapsed]}  {task.fields[state]}"),
        TimeElapsedColumn(),
    )
    sweep = fetch()
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(sweep.get("name") or sweep["id"][:8], total=sweep["progress"]["total"],
                            best="—", collapsed=0, state=phase(sweep))  # fmt: skip
        while True:
            progress = sweep["progress"]
            done = progress.get("done", progress["completed"] + progress["failed"])
            bar.update(task, completed=done, total=progress["total"], best=_number(sweep.get("best_elbo")),
                       collapsed=progress["collapsed"], state=phase(sweep))  # fmt: skip
            if sweep["status"] in FINISHED:
                return sweep
            time.sleep(interval)
            sweep = fetch()


_SYMBOLS = {"beta": "β", "learning_rate": "lr", "latent_dim": "z"}


def _params(trial: dict[str, Any]) -> str:
    """`β=1.22 made` or `capacity C=5 lr=0.001`: the sampled values, compactly (the family only when capacity)."""
    params = trial.get("params", {})
    keys = [key for key in PARAM_ORDER if key in params] + sorted(set(params) - set(PARAM_ORDER))
    shown = []
    for key in keys:
        value = params[key]
        if key == "objective":
            shown += ["capacity"] if value == "capacity" else []
        elif key == "decoder":
            shown.append(str(value))
        else:
            shown.append(f"{_SYMBOLS.get(key, key)}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(shown)


def pareto_table(view: dict[str, Any]) -> Table:
    recommended = (view.get("recommended") or {}).get("trial_id")
    top = view.get("max_elbo")
    caption = "held-out nats; ★ recommended; ▲ max ELBO (shown below the front when it is not on it)"
    table = Table(title=f"Pareto front of sweep {view['sweep_id']}", caption=caption)
    table.add_column("", width=1)
    table.add_column("#", justify="right")
    table.add_column("params", overflow="fold", ratio=1)
    for _, title in METRICS:
        table.add_column(title, justify="right", no_wrap=True)
    table.add_column("collapsed", no_wrap=True, min_width=9)
    rows = list(view["front"])
    if top is not None and all(trial["trial_id"] != top["trial_id"] for trial in rows):
        rows.append(top)
    for trial in rows:
        metrics = trial.get("metrics", {})
        mark = "★" if trial["trial_id"] == recommended else "▲" if top and trial["trial_id"] == top["trial_id"] else ""
        cells = [_number(metrics.get(key)) for key, _ in METRICS]
        if metrics.get("mutual_info_saturated"):  # a lower bound at the estimator's cap log N, not a measurement
            cells[[key for key, _ in METRICS].index("mutual_info")] = f"≥{_number(metrics.get('mutual_info'))}"
        table.add_row(mark, str(trial["number"]), _params(trial), *cells,
                      "yes" if trial.get("collapsed") else "no")  # fmt: skip
    return table


def recommendation_lines(view: dict[str, Any]) -> list[str]:
    """The verdict: the recommendation, the max-ELBO trial's collapse, the ELBO gap ± SE, IWAE, caveats."""
    lines = []
    best, top = view.get("recommended"), view.get("max_elbo")
    if best is None:
        lines.append(f"No recommendation: {view.get('reason') or 'no feasible trial'}")
    else:
        elbo = best.get("metrics", {}).get("elbo")
        lines.append(f"Recommended: trial {best['number']} ({_params(best)}), ELBO {_number(elbo)} nats.")
    if top is not None:
        state = {True: "collapsed", False: "not collapsed", None: "undetermined (censored trials)"}
        line = f"Max-ELBO trial {top['number']}: {state[view.get('max_elbo_collapsed')]}"
        if best is not None and best["trial_id"] != top["trial_id"] and view.get("elbo_gap") is not None:
            se = view.get("elbo_gap_se")
            line += f"; keeping trial {best['number']} costs {_number(view['elbo_gap'])}"
            line += f" ± {_number(se)} nats (paired SE)" if se is not None else " nats"
        bound = view.get("max_iwae")
        if bound is not None:
            line += f"; the IWAE bound puts trial {bound['number']} first"
        lines.append(line + ".")
    if best is not None and view.get("reason"):
        lines.append(f"Why: {view['reason']}")
    lines.extend(f"Note: {note}" for note in view.get("notes") or [])
    return lines


def schedules_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title="Schedules")
    for column in ("id", "name", "cron", "timezone", "state", "next fire", "last sweep", "warm"):
        table.add_column(column)
    for item in items:
        upcoming = item.get("next_fire_times") or []
        table.add_row(item["id"], item.get("name") or "", item["cron"], item["timezone"],
                      "paused" if item["paused"] else "active", upcoming[0] if upcoming else "—",
                      item.get("last_sweep_id") or "—", "yes" if item.get("warm_start") else "no")  # fmt: skip
    return table


def sweeps_table(page: dict[str, Any]) -> Table:
    table = Table(title=f"Sweeps ({page['total']})")
    for column in ("id", "name", "status", "origin", "done/total", "best ELBO", "collapsed"):
        table.add_column(column)
    for item in page["items"]:
        progress = item["progress"]
        done = progress.get("done", progress["completed"] + progress["failed"])
        table.add_row(item["id"], item.get("name") or "", item["status"], item["origin"],
                      f"{done}/{progress['total']}", _number(item.get("best_elbo")),
                      str(progress["collapsed"]))  # fmt: skip
    return table
