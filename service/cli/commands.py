"""`rdvae` command line (typer + rich): serve the API, submit and follow sweeps, Pareto fronts, schedules, train.

Talks to the API at --url / RDVAE_URL with --token / RDVAE_TOKEN. Exit status: 0 ok, 1 API error or failed sweep,
2 invalid input (missing spec file, 422 with its field paths), 3 API unreachable, 4 token refused (401/403).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from service.cli import render as cli_render
from service.cli.client import DEFAULT_URL, EXIT_API, ApiClient, CliError, load_spec_file

app = typer.Typer(help="rdvae: rate-distortion VAE sweeps — serve, submit, watch, pick a model, schedule.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)  # fmt: skip
schedule_app = typer.Typer(help="Scheduled sweeps: a cron expression (with timezone) + a SweepSpec template.",
                           no_args_is_help=True)  # fmt: skip
app.add_typer(schedule_app, name="schedule")
# piped (not a terminal): no 80-column limit, so ids and URLs are never cut or folded
out = Console(width=None if sys.stdout.isatty() else 1_000)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 1_000)

Url = Annotated[str, typer.Option("--url", envvar="RDVAE_URL", help="API base URL.")]
Token = Annotated[str | None, typer.Option("--token", envvar="RDVAE_TOKEN", help="Bearer token.", show_default=False)]
SweepId = Annotated[str, typer.Argument(help="Sweep id or a unique prefix of it (from `rdvae submit`, `rdvae list`).")]
ScheduleId = Annotated[str, typer.Argument(help="Schedule id (from `rdvae schedule list`).")]
SpecFile = Annotated[Path, typer.Argument(help="SweepSpec as YAML or JSON.", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the raw JSON.")]
F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(command: F) -> F:
    """Turn a `CliError` into one line on stderr (plus the 422 field paths) and its exit status."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CliError as error:
            err.print(f"[red]rdvae: error:[/red] {error.message}", highlight=False, soft_wrap=True)
            for line in error.details:
                err.print(f"  {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _client(url: str, token: str | None) -> ApiClient:
    return ApiClient(url, token)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []})
def train(ctx: typer.Context) -> None:
    """Train one VAE locally (all arguments go to the trainer; `rdvae train --help` lists them)."""
    from rdvae.cli import main as train_main

    raise typer.Exit(train_main(["train", *ctx.args]))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address of the API.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    external: Annotated[
        bool, typer.Option("--external", help="Use RDVAE_RAY_ADDRESS / MLFLOW_TRACKING_URI as given (compose).")
    ] = False,
    state_dir: Annotated[Path, typer.Option(envvar="RDVAE_STATE_DIR", help="Embedded: DB, sweeps, MLflow.")] = Path(
        ".rdvae"
    ),
    mlflow_port: Annotated[int, typer.Option(help="Embedded MLflow UI port on 127.0.0.1 (0: any free).")] = 5000,
    ray_port: Annotated[int, typer.Option(help="Embedded Ray head port on 127.0.0.1 (0: any free).")] = 0,
    num_cpus: Annotated[int | None, typer.Option(help="Embedded Ray: CPUs to offer (default: all).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the API. Embedded (default): also a local MLflow server with its UI and a local Ray head, on loopback."""
    import uvicorn

    from service.stack.embedded import EmbeddedStack

    signal.signal(signal.SIGTERM, _interrupt)  # so SIGTERM unwinds through `finally` like Ctrl-C
    stack = None
    try:
        if not external:
            stack = EmbeddedStack(state_dir.resolve())
            err.print(f"starting MLflow and Ray on 127.0.0.1 (logs in {state_dir}/) …")
            stack.start(mlflow_port=mlflow_port, ray_port=ray_port, num_cpus=num_cpus)
            os.environ.update(stack.env)
            err.print(f"MLflow UI: {stack.mlflow_uri}   Ray: {stack.ray_address}")
        os.environ["UVICORN_HOST"] = host  # the app's bind check reads it
        err.print(f"API: http://{host}:{port}  (docs at /docs)")
        uvicorn.run("service.api.app:app", host=host, port=port, log_level=log_level)
    except KeyboardInterrupt:
        pass
    finally:
        if stack is not None:
            stack.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@app.command()
@_reports_errors
def submit(
    spec_file: SpecFile,
    url: Url = DEFAULT_URL,
    token: Token = None,
    name: Annotated[str | None, typer.Option(help="Override the spec's name.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow its progress until it finishes.")] = False,
) -> None:
    """Submit a sweep; prints its id on stdout."""
    spec = load_spec_file(spec_file)
    if name:
        spec["name"] = name
    client = _client(url, token)
    accepted = client.submit(spec)
    print(accepted["id"])
    where = f" (queue position {accepted['queue_position']})" if accepted.get("queue_position") else ""
    err.print(f"accepted: {accepted['status']}{where}; follow with `rdvae status {accepted['id']} --watch`")
    if watch:
        _follow(client, accepted["id"])


@app.command()
@_reports_errors
def status(
    sweep_id: SweepId,
    url: Url = DEFAULT_URL,
    token: Token = None,
    watch: Annotated[bool, typer.Option("--watch", help="Live progress bar until the sweep finishes.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls with --watch.")] = 1.0,
    as_json: AsJson = False,
) -> None:
    """A sweep's status, progress and best ELBO so far; --watch follows it live."""
    client = _client(url, token)
    sweep_id = client.resolve(sweep_id)
    if watch:
        _follow(client, sweep_id, interval)
        return
    sweep = client.sweep(sweep_id)
    if not _printed_json(sweep, as_json):
        out.print(cli_render.sweep_table(sweep))


def _printed_json(document: Any, as_json: bool) -> bool:
    """`--json`: print the API's answer as it came; the caller renders a table otherwise."""
    if as_json:
        print(json.dumps(document, indent=2))
    return as_json


def _follow(client: ApiClient, sweep_id: str, interval: float = 1.0) -> None:
    sweep = cli_render.watch(lambda: client.sweep(sweep_id), err, interval)
    out.print(cli_render.sweep_table(sweep))
    if sweep["status"] != "succeeded":
        raise CliError(f"sweep {sweep_id} {sweep['status']}", EXIT_API)


@app.command()
@_reports_errors
def pareto(
    sweep_id: SweepId,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
    plot: Annotated[Path | None, typer.Option(help="Also save the rate-distortion plane PNG here.")] = None,
) -> None:
    """The Pareto front of a finished sweep and the recommended model."""
    client = _client(url, token)
    sweep_id = client.resolve(sweep_id)
    view = client.pareto(sweep_id)
    if not _printed_json(view, as_json):
        out.print(cli_render.pareto_table(view))
        for line in cli_render.recommendation_lines(view):
            out.print(line, highlight=False, soft_wrap=True)
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot.write_bytes(client.plot(sweep_id))
        err.print(f"rate-distortion plane: {plot}")


@app.command()
@_reports_errors
def cancel(sweep_id: SweepId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Cancel a queued or running sweep."""
    client = _client(url, token)
    sweep_id = client.resolve(sweep_id)
    sweep = client.cancel(sweep_id)
    out.print(f"sweep {sweep_id}: {sweep['status']}" + (" (cancel requested)" if sweep.get("cancel_requested") else ""))


@app.command("rm")
@_reports_errors
def remove(sweep_id: SweepId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Delete a finished sweep: its record, state and Ray checkpoints (its MLflow runs are kept)."""
    client = _client(url, token)
    sweep_id = client.resolve(sweep_id)
    client.delete(sweep_id)
    out.print(f"sweep {sweep_id} deleted")


@app.command()
@_reports_errors
def trials(sweep_id: SweepId, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """A sweep's trials: final outcomes once finished, the started ones as they are so far while it runs."""
    client = _client(url, token)
    view = client.trials(client.resolve(sweep_id))
    if not _printed_json(view, as_json):
        out.print(cli_render.trials_table(view))


@app.command("list")
@_reports_errors
def list_sweeps(
    url: Url = DEFAULT_URL,
    token: Token = None,
    status: Annotated[str | None, typer.Option(help="Only this status (queued, running, succeeded, …).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
) -> None:
    """List sweeps, newest first."""
    out.print(cli_render.sweeps_table(_client(url, token).sweeps(status, limit)))


@schedule_app.command("add")
@_reports_errors
def schedule_add(
    spec_file: SpecFile,
    cron: Annotated[str, typer.Option(help="Cron expression, e.g. '0 2 * * *' (02:00 daily).")],
    timezone: Annotated[str, typer.Option(help="IANA timezone the cron is read in.")] = "UTC",
    name: Annotated[str | None, typer.Option(help="A name for the schedule.")] = None,
    warm_start: Annotated[
        bool, typer.Option("--warm-start", help="Seed each sweep with the previous sweep's Pareto-front params.")
    ] = False,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Run a sweep on a cron schedule; prints the schedule id."""
    body = {"name": name, "cron": cron, "timezone": timezone, "spec": load_spec_file(spec_file),
            "warm_start": warm_start, "paused": paused}  # fmt: skip
    created = _client(url, token).request("POST", "/v1/schedules", json=body)
    print(created["id"])
    upcoming = ", ".join(created.get("next_fire_times", [])[:3]) or "none (paused)"
    err.print(f"next fire times: {upcoming}")


@schedule_app.command("list")
@_reports_errors
def schedule_list(url: Url = DEFAULT_URL, token: Token = None) -> None:
    """List schedules with their next fire time."""
    out.print(cli_render.schedules_table(_client(url, token).request("GET", "/v1/schedules")["items"]))


@schedule_app.command("rm")
@_reports_errors
def schedule_rm(schedule_id: ScheduleId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Delete a schedule (sweeps it started are kept)."""
    _client(url, token).schedule("DELETE", schedule_id)
    out.print(f"schedule {schedule_id} deleted")


@schedule_app.command("pause")
@_reports_errors
def schedule_pause(schedule_id: ScheduleId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Pause a schedule: it fires no more until resumed."""
    _client(url, token).schedule("POST", schedule_id, "pause")
    out.print(f"schedule {schedule_id} paused")


@schedule_app.command("resume")
@_reports_errors
def schedule_resume(schedule_id: ScheduleId, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Resume a schedule; it fires next at its next cron time from now (no catch-up)."""
    item = _client(url, token).schedule("POST", schedule_id, "resume")
    out.print(f"schedule {schedule_id} resumed; next fire {(item.get('next_fire_times') or ['—'])[0]}")


def main() -> None:
    """Console script `rdvae`."""
    app(prog_name="rdvae")


if __name__ == "__main__":
    sys.exit(main())
