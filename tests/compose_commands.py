"""Helpers that read docker-compose.yml and turn a service's command into the same command on loopback."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")
# The root conftest by path: a bare `import conftest` resolves to whichever conftest pytest loaded last.
_spec = importlib.util.spec_from_file_location("_rdvae_root_conftest_compose", ROOT / "tests" / "conftest.py")
root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(root_conftest)
DOCKER_HOSTS = ("@postgres", "mlflow:5000", "ray-head:", "0.0.0.0")


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    """The `.env.example` assignments (comments and blank lines skipped)."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def referenced_variables(text: str) -> set[str]:
    return {match.group(1) for match in _VARIABLE.finditer(text)}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` substitution; `$$` is a literal `$`."""

    def _one(match: re.Match[str]) -> str:
        name, kind, default = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name} is required: {default}")
        return default or ""

    return _VARIABLE.sub(_one, value).replace("$$", "$")


def localize(value: str, env: dict[str, str], replacements: dict[str, str]) -> str:
    """Interpolate, then swap container addresses for loopback ones; fail if a container address remains."""
    text = interpolate(value, env)
    for old, new in replacements.items():
        text = text.replace(old, new)
    leftover = [host for host in DOCKER_HOSTS if host in text]
    if leftover:
        raise AssertionError(f"{value!r} still names {leftover} after localizing: {text!r}")
    return text


def service_command(service: str, env: dict[str, str], replacements: dict[str, str]) -> list[str]:
    command = load_compose()["services"][service]["command"]
    assert isinstance(command, list), f"{service}: write the command in exec (list) form"
    return [localize(str(arg), env, replacements) for arg in command]


def service_environment(service: str, env: dict[str, str], replacements: dict[str, str]) -> dict[str, str]:
    variables = load_compose()["services"][service].get("environment") or {}
    return {key: localize(str(value), env, replacements) for key, value in variables.items()}


def healthcheck_command(service: str, env: dict[str, str], replacements: dict[str, str]) -> list[str]:
    test = load_compose()["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD", f"{service}: healthcheck must be exec form to run outside Docker"
    return [localize(str(arg), env, replacements) for arg in test[1:]]
