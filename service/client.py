"""A small HTTP client of the rdvae API for the CLI: one method per call, one readable error per failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

DEFAULT_URL = "http://127.0.0.1:8000"
EXIT_API = 1
EXIT_INVALID = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4


class CliError(Exception):
    """A failure the CLI reports as one line (plus field lines for a 422) and an exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_API, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.details = details or []


def load_spec_file(path: Path) -> dict[str, Any]:
    """A spec (or schedule) YAML/JSON file as a mapping; the server validates its content."""
    if not path.is_file():
        raise CliError(f"spec file {path} not found", EXIT_INVALID)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise CliError(f"spec file {path} is not valid YAML: {error}".replace("\n", " "), EXIT_INVALID) from error
    if not isinstance(document, dict):
        raise CliError(f"spec file {path} must hold a mapping of SweepSpec fields", EXIT_INVALID)
    return document


class ApiClient:
    """Calls the API at `url` with a bearer `token`; every non-2xx answer becomes a `CliError`."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, json: Any = None, params: dict | None = None) -> Any:
        try:
            answer = self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as error:
            raise CliError(
                f"cannot reach the rdvae API at {self.url} ({type(error).__name__}: {error}); "
                "is `rdvae serve` running? Set --url or RDVAE_URL",
                EXIT_UNREACHABLE,
            ) from error
        if answer.is_success:
            return answer.json() if answer.content else None
        raise _error_of(answer)

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/sweeps", json=spec)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/sweeps/{sweep_id}")

    def sweeps(self, status: str | None, limit: int) -> dict[str, Any]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self.request("GET", "/v1/sweeps", params=params)

    def pareto(self, sweep_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/sweeps/{sweep_id}/pareto")

    def cancel(self, sweep_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/sweeps/{sweep_id}/cancel")

    def plot(self, sweep_id: str) -> bytes:
        try:
            answer = self._http.get(f"/v1/sweeps/{sweep_id}/plot.png")
        except httpx.TransportError as error:
            raise CliError(f"cannot reach the rdvae API at {self.url}: {error}", EXIT_UNREACHABLE) from error
        if not answer.is_success:
            raise _error_of(answer)
        return answer.content


def _error_of(answer: httpx.Response) -> CliError:
    try:
        body = answer.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    detail = detail if isinstance(detail, str) else answer.reason_phrase
    if answer.status_code in (401, 403):
        return CliError(
            f"the API refused the token (HTTP {answer.status_code}: {detail}); set --token or RDVAE_TOKEN", EXIT_AUTH
        )
    fields = [f"{item['field']}: {item['reason']}" for item in (body.get("errors") or []) if isinstance(item, dict)]
    code = EXIT_INVALID if answer.status_code == 422 else EXIT_API
    return CliError(f"HTTP {answer.status_code}: {detail}", code, fields)
