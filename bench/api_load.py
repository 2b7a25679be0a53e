"""Benchmark: p50/p99 latency and throughput of GET /v1/sweeps/{id} and POST /v1/sweeps (validation + enqueue,
runner off) with 50 concurrent clients, against a bare FastAPI endpoint served the same way in the same run.

    .venv/bin/python bench/api_load.py [--requests 2000] [--clients 50]

Each app runs in its own `uvicorn` process (one worker, 127.0.0.1); the load generator is an asyncio httpx client
in this process. Target: service p99 <= 2x the bare endpoint's p99. Never gates CI.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from fastapi import Body, FastAPI

from service.stack.embedded import free_port, http_ok, wait_ready

TOKEN = "bench-token-0123456789"
SPEC = {
    "name": "bench",
    "dataset": "digits",
    "n_trials": 4,
    "epochs": 2,
    "model": {"latent_dim": 4, "hidden_dims": [32]},
    "search_space": {"objective": ["beta"], "beta": {"low": 0.1, "high": 10.0}},
}


def service_app() -> FastAPI:
    """The real service, runner off: POST measures validation + quota checks + the durable enqueue only."""
    from service.api.app import create_app
    from service.settings import Settings

    return create_app(Settings(), start_runner=False)


def bare_app() -> FastAPI:
    """The baseline: FastAPI with one GET and one POST that parses a JSON object, nothing else."""
    app = FastAPI()

    @app.get("/bare/{item_id}")
    async def bare_get(item_id: str) -> dict[str, str]:
        return {"id": item_id, "status": "queued"}

    @app.post("/bare", status_code=202)
    async def bare_post(body: dict = Body(...)) -> dict[str, str]:  # noqa: B008 - FastAPI's idiom
        return {"id": "x", "status": "queued"}

    return app


def _serve(factory: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"api_load:{factory}",
            "--factory",
            "--app-dir",
            str(Path(__file__).parent),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(lambda: http_ok(f"{url}/openapi.json"), process, factory, timeout=60)
    except (RuntimeError, TimeoutError):
        process.kill()
        raise
    return process, url


async def _load(
    url: str, method: str, path: str, body: dict | None, requests: int, clients: int, headers: dict[str, str]
) -> dict:
    latencies: list[float] = []
    errors = 0
    kinds: Counter[str] = Counter()
    remaining = requests
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                try:
                    answer = await client.request(method, path, json=body)
                except httpx.TransportError as error:  # counted, not fatal: a dropped connection under overload
                    errors += 1
                    kinds[type(error).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - start)
                if answer.status_code >= 300 and answer.status_code != 202:
                    errors += 1
                    kinds[str(answer.status_code)] += 1

        await asyncio.gather(*(worker() for _ in range(min(clients, 10))))  # warm-up, not recorded
        latencies.clear()
        remaining = requests
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "p50_ms": 1e3 * statistics.median(ordered),
        "p99_ms": 1e3 * ordered[int(0.99 * (len(ordered) - 1))],
        "rps": len(ordered) / wall,
        "errors": errors,
        "kinds": dict(kinds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="rdvae-apiload-"))
    atexit.register(shutil.rmtree, state, True)
    env = {
        **os.environ,
        "RDVAE_STATE_DIR": str(state),
        "RDVAE_API_TOKENS": TOKEN,
        "RDVAE_DATA_ROOT": str(state),
        "RDVAE_MAX_ACTIVE_SWEEPS_PER_TOKEN": "1000000000",
        "RDVAE_MAX_QUEUED_SWEEPS": "1000000000",
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    rows: dict[str, dict] = {}
    process, url = _serve("bare_app", env)
    try:
        rows["bare GET"] = asyncio.run(_load(url, "GET", "/bare/abc", None, args.requests, args.clients, {}))
        rows["bare POST"] = asyncio.run(_load(url, "POST", "/bare", SPEC, args.requests, args.clients, {}))
    finally:
        process.terminate()
        process.wait()
    process, url = _serve("service_app", env)
    try:
        sweep_id = httpx.post(f"{url}/v1/sweeps", json=SPEC, headers=auth).json()["id"]
        rows["GET /v1/sweeps/{id}"] = asyncio.run(
            _load(url, "GET", f"/v1/sweeps/{sweep_id}", None, args.requests, args.clients, auth)
        )
        rows["POST /v1/sweeps"] = asyncio.run(_load(url, "POST", "/v1/sweeps", SPEC, args.requests, args.clients, auth))
    finally:
        process.terminate()
        process.wait()
    print(f"{args.clients} concurrent clients, {args.requests} requests each, one uvicorn worker per app")
    print(f"{'endpoint':<22}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'errors':>8}")
    for name, row in rows.items():
        kinds = f"  {row['kinds']}" if row["kinds"] else ""
        print(f"{name:<22}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}{row['rps']:>9.0f}{row['errors']:>8.0f}{kinds}")
    for name, bare in (("GET /v1/sweeps/{id}", "bare GET"), ("POST /v1/sweeps", "bare POST")):
        ratio = rows[name]["p99_ms"] / rows[bare]["p99_ms"]
        verdict = "meets" if ratio <= 2.0 else "misses"
        print(f"p99 ratio {name} / {bare}: {ratio:.2f}x ({verdict} the 2x target)")


if __name__ == "__main__":
    main()
