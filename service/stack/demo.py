"""`make demo`: the embedded stack (local Ray, local MLflow + UI, the API), one real sweep, the answer.

Submits examples/digits_collapse.yaml through the API (the seed question: the max-ELBO model of a β scan is
collapsed), shows live progress, prints the Pareto table and the answer — which model to keep, what it costs in ELBO
± SE, what IWAE says — writes the rate-distortion plane PNG and prints the MLflow UI URL; stops unless --keep.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from service.cli import render as cli_render
from service.cli.client import ApiClient, CliError, load_spec_file
from service.stack.embedded import LOOPBACK, EmbeddedStack, executable, free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]  # service/stack/demo.py -> the repository root
DEFAULT_SPEC = ROOT / "examples" / "digits_collapse.yaml"


def _port_or_free(port: int) -> int:
    """`port` when it is free on loopback, else (or for 0) any free one: another service may hold it."""
    import socket

    if port == 0:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return free_port()
    return port


def start_api(stack: EmbeddedStack, port: int, token: str) -> subprocess.Popen:
    """`rdvae serve --external` on loopback, wired to the embedded stack (the same command compose runs)."""
    env = {**os.environ, **stack.env, "RDVAE_API_TOKENS": token}
    command = [executable("rdvae"), "serve", "--external", "--host", LOOPBACK, "--port", str(port),
               "--log-level", "warning"]  # fmt: skip
    with (stack.state_dir / "api.log").open("a") as log:
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    stack.processes.append(process)  # stopped (first) with the stack
    return process


def _wait_api(client: ApiClient, process: subprocess.Popen, timeout: float = 120.0) -> None:
    wait_ready(lambda: _healthy(client), process, "the API", timeout)


def _healthy(client: ApiClient) -> bool:
    try:
        client.request("GET", "/healthz")
    except CliError:
        return False
    return True


def run(spec_path: Path, state_dir: Path, keep: bool, mlflow_port: int, api_port: int, console: Console) -> int:
    started = time.monotonic()
    token = secrets.token_urlsafe(24)
    stack = EmbeddedStack(state_dir.resolve())
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        console.print(f"[bold]1/4[/bold] starting local MLflow and Ray on {LOOPBACK} (logs in {state_dir}/) …")
        stack.start(mlflow_port=_port_or_free(mlflow_port))
        port = _port_or_free(api_port)
        api = start_api(stack, port, token)
        client = ApiClient(f"http://{LOOPBACK}:{port}", token)
        _wait_api(client, api)
        console.print(f"      API http://{LOOPBACK}:{port}   MLflow UI {stack.mlflow_uri}   Ray {stack.ray_address}")
        console.print(f"[bold]2/4[/bold] submitting {spec_path}")
        sweep_id = client.submit(load_spec_file(spec_path))["id"]
        console.print(f"      sweep {sweep_id}")
        sweep = cli_render.watch(lambda: client.sweep(sweep_id), console, interval=1.0)
        if sweep["status"] != "succeeded":
            console.print(cli_render.sweep_table(sweep))
            return 1
        console.print("[bold]3/4[/bold] which model to keep?")
        view = client.pareto(sweep_id)
        console.print(cli_render.pareto_table(view))
        for line in cli_render.recommendation_lines(view):
            console.print(line, highlight=False)
        plot = state_dir / "demo" / "rd_plane.png"
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot.write_bytes(client.plot(sweep_id))
        console.print(f"[bold]4/4[/bold] rate-distortion plane: {plot}")
        experiment = sweep.get("mlflow_experiment_id")
        console.print(f"      MLflow UI: {stack.mlflow_uri}/#/experiments/{experiment}" if experiment
                      else f"      MLflow UI: {stack.mlflow_uri}")  # fmt: skip
        if sweep.get("mlflow_parent_run_url"):
            console.print(f"      parent run: {sweep['mlflow_parent_run_url']}")
        console.print(f"done in {time.monotonic() - started:.0f} s")
        if keep:
            console.print("serving until Ctrl-C (--keep) …")
            api.wait()
        return 0
    except KeyboardInterrupt:
        return 130
    except CliError as error:
        console.print(f"[red]demo failed:[/red] {error.message}")
        for line in error.details:
            console.print(f"  {line}")
        return error.exit_code
    finally:
        stack.stop()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.stack.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="SweepSpec YAML (default: digits collapse).")
    parser.add_argument("--state-dir", type=Path, default=Path(".rdvae"), help="Where DBs, logs and the PNG go.")
    parser.add_argument("--keep", action="store_true", help="Keep the API, MLflow UI and Ray running afterwards.")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="MLflow UI port (another if taken).")
    parser.add_argument("--api-port", type=int, default=8000, help="API port (another if taken).")
    args = parser.parse_args(argv)
    return run(args.spec, args.state_dir, args.keep, args.mlflow_port, args.api_port, Console())


if __name__ == "__main__":
    sys.exit(main())
