"""Request dependencies: a DB session per request, the settings and the runner of the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.queue.db import session_scope
from service.queue.runner import Runner
from service.settings import Settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request. Async (no thread hop; it only opens a connection when the endpoint, which runs in
    the thread pool, first queries); the commit at the end is a no-op for routes that committed themselves."""
    with session_scope(request.app.state.session_factory) as session:
        yield session


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_runner(request: Request) -> Runner:
    return request.app.state.runner


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RunnerDep = Annotated[Runner, Depends(get_runner)]
