"""The CLI's own input checks (service/cli/client.py): bad spec files, --url and --token are exit 2 with the reason,
never a traceback, and ids stay one path segment of the URL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from service_helpers import TOKEN, ApiProcess, free_port

RDVAE = str(Path(sys.executable).parent / "rdvae")


def rdvae(*args: str, url: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("RDVAE_URL", "RDVAE_TOKEN")}
    env.update({"RDVAE_URL": url, "COLUMNS": "200", **({"RDVAE_TOKEN": token} if token is not None else {})})
    return subprocess.run([RDVAE, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"n_trials: .nan\n", "n_trials: nan is not a finite number"),
        (b"warm_start_params: [{beta: .inf}]\n", "warm_start_params.0.beta: inf is not a finite number"),
        (b"name: 2024-01-01\n", "name: a date is not a JSON value"),
        (b"\xff\xfe\x00", "cannot be read: not UTF-8 text"),
    ],
)
def test_spec_files_json_cannot_carry_are_exit_2(tmp_path: Path, content: bytes, reason: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content)
    # the port is closed: the file is refused before any request
    answer = rdvae("submit", str(spec), url=f"http://127.0.0.1:{free_port()}")
    assert answer.returncode == 2, answer.stderr
    assert reason in answer.stderr and "Traceback" not in answer.stderr


def test_the_cli_reads_yaml_numbers_as_the_driver_does(tmp_path: Path) -> None:
    # the CLI keeps its own loader (no torch import on submit); it must agree with the driver's, 1e-3 included
    from service.cli.client import load_spec_file
    from workers.spec import SpecYamlLoader

    text = "a: 1e-3\nb: -2E+4\nc: .5e-1\nd: 3\ne: 1.5\nf: '1e-3'\ng: 1e\nh: e5\ni: 1_000\n"
    (tmp_path / "spec.yaml").write_text(text)
    read = load_spec_file(tmp_path / "spec.yaml")
    assert read == yaml.load(text, Loader=SpecYamlLoader)
    expected = {"a": 0.001, "b": -20000.0, "c": 0.05, "d": 3, "e": 1.5, "f": "1e-3", "g": "1e", "h": "e5", "i": 1000}
    assert read == expected


def test_a_directory_is_not_a_spec_file(tmp_path: Path) -> None:
    answer = rdvae("submit", str(tmp_path), url=f"http://127.0.0.1:{free_port()}")
    assert answer.returncode == 2 and "cannot be read: Is a directory" in answer.stderr


@pytest.mark.parametrize(
    ("url", "token", "reason"),
    [
        ("http://[::1", TOKEN, "--url 'http://[::1' is not a valid URL"),
        ("localhost:8000", TOKEN, "expected http(s)://host:port"),
        ("http://127.0.0.1:9", "tök", "--token (or RDVAE_TOKEN)"),
        ("http://127.0.0.1:9", "token\n", "--token (or RDVAE_TOKEN)"),
    ],
)
def test_bad_url_or_token_is_exit_2(url: str, token: str, reason: str) -> None:
    answer = rdvae("list", url=url, token=token)
    assert answer.returncode == 2, answer.stderr
    assert reason in answer.stderr and "Traceback" not in answer.stderr


def test_watch_interval_must_be_positive() -> None:
    answer = rdvae("status", "abc", "--watch", "--interval", "-1", url=f"http://127.0.0.1:{free_port()}")
    assert answer.returncode == 2 and "--interval" in answer.stderr


def test_an_id_is_one_path_segment(api_process: Callable[..., ApiProcess]) -> None:
    api = api_process().start()
    # "a?b" used to ask for sweep "a" (the rest became a query string)
    sweep = rdvae("status", "a?b", url=api.url)
    assert sweep.returncode == 1 and "no sweep with id 'a?b'" in sweep.stderr
    schedule = rdvae("schedule", "pause", "s#1", url=api.url)
    assert schedule.returncode == 1 and "no schedule with id 's#1'" in schedule.stderr
