"""A small HTTP client of the rdvae API for the CLI: one method per call, one readable error per failure."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

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


MAX_SPEC_BYTES = 1_048_576  # a spec is a few hundred bytes; the API refuses bodies over 64 KiB anyway
MAX_SPEC_VALUES = 100_000  # values after YAML alias expansion ("billion laughs" expands 358 bytes to 10⁹)
MAX_SPEC_DEPTH = 64


def _read_capped(path: Path) -> str:
    """The file's text, reading at most MAX_SPEC_BYTES + 1 bytes (so /dev/zero or a FIFO cannot exhaust memory)."""
    with path.open("rb") as handle:
        data = handle.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise CliError(f"spec file {path} is larger than {MAX_SPEC_BYTES} bytes", EXIT_INVALID)
    return data.decode("utf-8")


class _SpecYamlLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float, as YAML 1.2 does and the driver's loader (workers.spec) does; the
    CLI keeps its own copy so that submitting a spec does not import workers (torch)."""


_SpecYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_spec_file(path: Path) -> dict[str, Any]:
    """A spec (or schedule) YAML/JSON file as a mapping; the server validates its content. Any failure to read
    or parse it is one CliError line (exit 2): size, encoding, YAML syntax, alias bombs, recursion."""
    if not path.exists():
        raise CliError(f"spec file {path} not found", EXIT_INVALID)
    try:
        document = yaml.load(_read_capped(path), Loader=_SpecYamlLoader)
    except (OSError, UnicodeDecodeError) as error:  # a directory, no permission, not UTF-8
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise CliError(f"spec file {path} cannot be read: {reason}", EXIT_INVALID) from error
    except yaml.YAMLError as error:
        raise CliError(f"spec file {path} is not valid YAML: {error}".replace("\n", " "), EXIT_INVALID) from error
    except (RecursionError, ValueError, TypeError) as error:  # e.g. deep nesting, YAML a constructor rejects
        raise CliError(f"spec file {path} cannot be parsed: {type(error).__name__}", EXIT_INVALID) from error
    if not isinstance(document, dict):
        raise CliError(f"spec file {path} must hold a mapping of SweepSpec fields", EXIT_INVALID)
    problem = _not_json(document, "", [0])
    if problem is not None:
        raise CliError(f"spec file {path}: {problem}", EXIT_INVALID)
    return document


def _not_json(value: Any, field: str, seen: list[int], depth: int = 0) -> str | None:
    """The first value JSON cannot carry (YAML's .nan/.inf, dates, sets …), as `field: reason`; None when all can.
    `seen` counts the values visited, so YAML aliases that expand without end are refused, not walked."""
    seen[0] += 1
    if seen[0] > MAX_SPEC_VALUES:
        return f"expands to more than {MAX_SPEC_VALUES} values (YAML aliases?)"
    if depth > MAX_SPEC_DEPTH:
        return f"{field or 'spec'}: nested deeper than {MAX_SPEC_DEPTH} levels (a recursive YAML alias?)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{field or 'spec'}: key {key!r} is not a string"
            found = _not_json(item, f"{field}.{key}" if field else key, seen, depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _not_json(item, f"{field}.{index}", seen, depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{field}: {value} is not a finite number"
    if value is None or isinstance(value, str | int | float):
        return None
    return f"{field}: a {type(value).__name__} is not a JSON value; quote it to make it a string"


def _segment(value: str) -> str:
    """An id as one URL path segment: `?`, `#`, `/` or `..` in it cannot reach another endpoint or sweep."""
    return quote(value, safe="")


def _check_target(url: str, token: str | None) -> None:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise CliError(f"--url {url!r} is not a valid URL ({error}); e.g. {DEFAULT_URL}", EXIT_INVALID) from error
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise CliError(f"--url {url!r}: expected http(s)://host:port, e.g. {DEFAULT_URL}", EXIT_INVALID)
    if token is not None and not (token.isascii() and token.isprintable()):
        raise CliError("--token (or RDVAE_TOKEN): a token is printable ASCII, without newlines", EXIT_INVALID)


class ApiClient:
    """Calls the API at `url` with a bearer `token`; every non-2xx answer becomes a `CliError`."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        _check_target(url, token)
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, json: Any = None, params: dict | None = None) -> httpx.Response:
        try:
            answer = self._http.request(method, path, json=json, params=params)
        except httpx.TransportError as error:
            raise CliError(
                f"cannot reach the rdvae API at {self.url} ({type(error).__name__}: {error}); "
                "is `rdvae serve` running? Set --url or RDVAE_URL",
                EXIT_UNREACHABLE,
            ) from error
        if not answer.is_success:
            raise _error_of(answer)
        return answer

    def request(self, method: str, path: str, json: Any = None, params: dict | None = None) -> Any:
        answer = self._send(method, path, json, params)
        return answer.json() if answer.content else None

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/v1/sweeps", json=spec)

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/sweeps/{_segment(sweep_id)}")

    def sweeps(self, status: str | None, limit: int) -> dict[str, Any]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self.request("GET", "/v1/sweeps", params=params)

    def resolve(self, sweep_id: str) -> str:
        """The full id of a sweep given its id or a unique prefix of it (as `rdvae list` shows)."""
        if len(sweep_id) >= 32 or not sweep_id or any(char not in "0123456789abcdef" for char in sweep_id):
            return sweep_id  # a full id, or not an id at all: the API answers 404
        page = self.request("GET", "/v1/sweeps", params={"id_prefix": sweep_id, "limit": 2})
        ids = [item["id"] for item in page["items"]]
        if not ids:
            raise CliError(f"no sweep id starts with {sweep_id!r}", EXIT_API)
        if page["total"] > 1:
            raise CliError(f"{page['total']} sweep ids start with {sweep_id!r}; give more characters", EXIT_INVALID)
        return ids[0]

    def trials(self, sweep_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/sweeps/{_segment(sweep_id)}/trials")

    def pareto(self, sweep_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/sweeps/{_segment(sweep_id)}/pareto")

    def cancel(self, sweep_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/sweeps/{_segment(sweep_id)}/cancel")

    def delete(self, sweep_id: str) -> None:
        self.request("DELETE", f"/v1/sweeps/{_segment(sweep_id)}")

    def plot(self, sweep_id: str) -> bytes:
        return self._send("GET", f"/v1/sweeps/{_segment(sweep_id)}/plot.png").content

    def schedule(self, method: str, schedule_id: str, action: str = "") -> Any:
        """`method` on /v1/schedules/{id}[/action]."""
        return self.request(method, f"/v1/schedules/{_segment(schedule_id)}" + (f"/{action}" if action else ""))


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
