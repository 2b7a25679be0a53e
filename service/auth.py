"""Bearer-token auth: every mutating endpoint needs a configured token; reads are open or closed by setting."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.errors import ApiError
from service.settings import LOOPBACK_HOSTS, Settings

ANONYMOUS = "anonymous"
_bearer = HTTPBearer(auto_error=False, description="A token from RDVAE_API_TOKENS.")


def owner_of(token: str) -> str:
    """A stable, non-secret name for a token: quotas and `owner` use it; the token itself is never stored."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def _match(settings: Settings, presented: str) -> str | None:
    # compare_digest against every token, without early exit, so timing reveals neither token nor position
    found: str | None = None
    for token in settings.api_tokens:
        if hmac.compare_digest(token.encode(), presented.encode()):
            found = token
    return found


def _authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    settings: Settings = request.app.state.settings
    if not settings.api_tokens:
        return ANONYMOUS  # only reachable on loopback or with RDVAE_INSECURE (checked at start-up)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    token = _match(settings, credentials.credentials)
    if token is None:
        raise ApiError(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    return owner_of(token)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_writer(request: Request, credentials: Credentials) -> str:
    """Owner name of the caller of a mutating endpoint (async: pure CPU, no thread-pool hop)."""
    return _authenticate(request, credentials)


async def require_reader(request: Request, credentials: Credentials) -> str | None:
    """Reads are open unless RDVAE_OPEN_READS=false."""
    if request.app.state.settings.open_reads:
        return None
    return _authenticate(request, credentials)


def check_bind(settings: Settings, host: str) -> None:
    """Refuse a non-loopback bind without tokens unless RDVAE_INSECURE is set."""
    if not settings.api_tokens and not settings.insecure and host not in LOOPBACK_HOSTS:
        raise RuntimeError(
            f"refusing to serve on {host!r} without RDVAE_API_TOKENS; set tokens, bind 127.0.0.1, "
            "or set RDVAE_INSECURE=true"
        )


Writer = Annotated[str, Depends(require_writer)]
Reader = Annotated[str | None, Depends(require_reader)]
