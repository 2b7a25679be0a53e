"""The same store, migrations and runner on a real PostgreSQL (a private cluster on 127.0.0.1), when installed.

Skipped unless `psycopg` (extra `postgres`) and the PostgreSQL server binaries (`initdb`, `postgres`) are present.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import TOKEN, free_port, stop_process, wait_until

from service.api.app import create_app
from service.queue import store
from service.queue.db import make_engine, make_session_factory, migrate, session_scope
from service.queue.runner import Runner
from service.settings import Settings

psycopg = pytest.importorskip("psycopg")
if not (shutil.which("initdb") and shutil.which("postgres")):
    pytest.skip("PostgreSQL server binaries not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """`initdb` + `postgres` on a free loopback port; as the `postgres` user when the tests run as root."""
    root = Path(tempfile.mkdtemp(prefix="rdvae-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    subprocess.run([*prefix, "initdb", "-D", str(data), "-A", "trust", "-U", "rdvae"], check=True, capture_output=True)
    server = subprocess.Popen(
        [*prefix, "postgres", "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"postgresql+psycopg://rdvae@127.0.0.1:{port}/postgres"
    try:
        wait_until(lambda: _accepts(port), timeout=60)
        yield url
    finally:
        stop_process(server)
        shutil.rmtree(root, ignore_errors=True)


def _accepts(port: int) -> bool:
    try:
        psycopg.connect(f"host=127.0.0.1 port={port} user=rdvae dbname=postgres", connect_timeout=2).close()
    except psycopg.OperationalError:
        time.sleep(0.3)
        return False
    return True


def test_api_and_runner_on_postgres(postgres_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRIAL_SECONDS", "0.1")
    on_postgres = settings.model_copy(update={"database_url": postgres_url})
    engine = make_engine(postgres_url)
    migrate(engine)
    migrate(engine)  # idempotent
    with TestClient(create_app(on_postgres, start_runner=False)) as client:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ids = [
            client.post("/v1/sweeps", json={"dataset": "digits", "n_trials": 2}, headers=auth).json()["id"]
            for _ in range(2)
        ]
        assert client.get("/v1/sweeps", params={"status": "queued"}).json()["total"] == 2
        assert client.get(f"/v1/sweeps/{ids[1]}").json()["queue_position"] == 2
        assert client.get("/readyz").json()["checks"]["database"]["detail"] == "postgresql"
    factory = make_session_factory(engine)
    runner = Runner(on_postgres, factory)

    def finished() -> bool:
        runner.tick()
        with session_scope(factory) as session:
            return all(store.get_sweep(session, i).status == "succeeded" for i in ids)

    wait_until(finished, timeout=60)
    with session_scope(factory) as session:
        assert [store.get_sweep(session, i).completed for i in ids] == [2, 2]
