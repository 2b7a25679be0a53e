"""The ASGI application: `create_app()` builds it from settings; `app` is what `uvicorn service.api.app:app` serves."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline

from service.api import errors
from service.api.auth import check_bind
from service.api.metrics import BodyLimitMiddleware, LatencyMiddleware, Metrics
from service.api.routes import ROUTERS
from service.queue.db import make_engine, make_session_factory, migrate
from service.queue.runner import Runner
from service.settings import Settings

logger = logging.getLogger(__name__)

DESCRIPTION = """Durable rate-distortion VAE sweeps. POST a `SweepSpec`; it is queued (FIFO, a limit on running
sweeps), run by `workers` on Ray with Optuna, tracked in MLflow, and survives a restart of this service.
Mutating endpoints need `Authorization: Bearer <token>`; reads too when RDVAE_OPEN_READS=false."""


def bind_host(settings: Settings) -> str:
    """The host uvicorn was told to bind (`--host`, UVICORN_HOST), else RDVAE_HOST."""
    argv = sys.argv
    for index, arg in enumerate(argv):
        if arg == "--host" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--host="):
            return arg.split("=", 1)[1]
    return os.environ.get("UVICORN_HOST", settings.host)


def create_app(settings: Settings | None = None, *, start_runner: bool = True) -> FastAPI:
    """Build the app. Migrations, the bind check and the runner start in the lifespan, i.e. when served."""
    settings = settings or Settings()
    engine = make_engine(settings.resolved_database_url)
    session_factory = make_session_factory(engine)
    runner = Runner(settings, session_factory)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        check_bind(settings, bind_host(settings))
        if not settings.all_tokens:
            logger.warning("no RDVAE_API_TOKENS: mutating endpoints are open (loopback or RDVAE_INSECURE only)")
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        migrate(engine)
        if start_runner:
            runner.start()
        try:
            yield
        finally:
            runner.stop()

    # /docs and /redoc load Swagger UI and ReDoc from the app itself (fastapi-offline's assets), not from a CDN
    app = FastAPIOffline(title="rdvae", version="1.0.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.runner = runner
    app.state.metrics = Metrics(session_factory)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: _openapi(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's document, with every 422 described by the body the service really sends (`ErrorBody`)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = document["components"]["schemas"]  # ErrorBody is there: the sweep routes document it
        error_content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for operations in document.get("paths", {}).values():
            for operation in operations.values():
                invalid = operation.get("responses", {}).get("422")
                if invalid is not None:
                    invalid["content"] = error_content
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        _add_links(document)
        app.openapi_schema = document
    return app.openapi_schema


# OpenAPI links: what a created sweep or schedule leads to (clients and stateful API tests follow them)
_LINKS = {
    ("/v1/sweeps", "post", "202"): ("/v1/sweeps/{sweep_id}", "sweep_id", ("get", "delete")),
    ("/v1/schedules", "post", "201"): ("/v1/schedules/{schedule_id}", "schedule_id", ("get", "patch", "delete")),
}
_SUB_LINKS = {
    "/v1/sweeps/{sweep_id}": ("cancel", "trials", "pareto"),
    "/v1/schedules/{schedule_id}": ("pause", "resume"),
}


def _add_links(document: dict) -> None:
    paths = document.get("paths", {})
    for (path, method, status), (target, parameter, methods) in _LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        targets = [(target, m) for m in methods] + [
            (f"{target}/{action}", m)
            for action in _SUB_LINKS.get(target, ())
            for m in paths.get(f"{target}/{action}", {})
        ]
        links = response.setdefault("links", {})
        for target_path, target_method in targets:
            operation = paths.get(target_path, {}).get(target_method)
            if operation is not None:
                links[operation["operationId"]] = {
                    "operationId": operation["operationId"],
                    "parameters": {parameter: "$response.body#/id"},
                }


app = create_app()
