"""Bearer-token auth and ownership: mutating endpoints need a token, and act only on the caller's own sweeps and
schedules (another owner's object answers 404, as if it did not exist, so ids of others are not even confirmed);
an admin token (RDVAE_ADMIN_TOKENS) acts on all. Reads are open by setting; closed reads see one's own objects."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import ApiError
from service.settings import LOOPBACK_HOSTS, Settings

ANONYMOUS = "anonymous"
_bearer = HTTPBearer(auto_error=False, description="A token from RDVAE_API_TOKENS.")


def owner_of(token: str) -> str:
    """A stable, non-secret name for a token: quotas and `owner` use it; the token itself is never stored."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the owner name of its token, and whether that token is an admin token."""

    owner: str
    admin: bool = False

    def may_act_on(self, owner: str) -> bool:
        return self.admin or self.owner == owner


def _match(tokens: list[str], presented: str) -> str | None:
    # compare_digest against every token, without early exit, so timing reveals neither token nor position
    found: str | None = None
    for token in tokens:
        if hmac.compare_digest(token.encode(), presented.encode()):
            found = token
    return found


def _authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    settings: Settings = request.app.state.settings
    if not settings.all_tokens:
        return Caller(ANONYMOUS, admin=True)  # only on loopback or with RDVAE_INSECURE (checked at start-up)
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    admin = _match(settings.admin_tokens, credentials.credentials)
    token = admin or _match(settings.api_tokens, credentials.credentials)
    if token is None:
        raise ApiError(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    return Caller(owner_of(token), admin=admin is not None)


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def require_writer(request: Request, credentials: Credentials) -> Caller:
    """The caller of a mutating endpoint (async: pure CPU, no thread-pool hop)."""
    return _authenticate(request, credentials)


async def require_reader(request: Request, credentials: Credentials) -> Caller | None:
    """Reads are open (None: anyone sees everything) unless RDVAE_OPEN_READS=false."""
    if request.app.state.settings.open_reads:
        return None
    return _authenticate(request, credentials)


def may_see(reader: Caller | None, owner: str) -> bool:
    """Open reads show every object; closed reads only the caller's own (all of them to an admin)."""
    return reader is None or reader.may_act_on(owner)


def check_bind(settings: Settings, host: str) -> None:
    """Refuse a non-loopback bind without tokens unless RDVAE_INSECURE is set."""
    if not settings.all_tokens and not settings.insecure and host not in LOOPBACK_HOSTS:
        raise RuntimeError(
            f"refusing to serve on {host!r} without RDVAE_API_TOKENS; set tokens, bind 127.0.0.1, "
            "or set RDVAE_INSECURE=true"
        )


Writer = Annotated[Caller, Depends(require_writer)]
Reader = Annotated[Caller | None, Depends(require_reader)]
