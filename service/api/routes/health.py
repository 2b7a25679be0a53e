"""Liveness, readiness (DB, Ray, MLflow reachable) and Prometheus metrics."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.api.deps import SessionDep, SettingsDep
from service.api.schemas import Check, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: DB, Ray and MLflow reachable",
    responses={503: {"model": Readiness, "description": "A dependency is unreachable."}},
)
def readyz(response: Response, session: SessionDep, settings: SettingsDep) -> Readiness:
    checks = {
        "database": _check_db(session),
        "ray": _check_ray(settings.ray_address),
        "mlflow": _check_mlflow(settings.resolved_tracking_uri),
    }
    ready = all(check.ok for check in checks.values())
    response.status_code = 200 if ready else 503
    return Readiness(status="ok" if ready else "unavailable", checks=checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _check_db(session: Session) -> Check:
    try:
        session.execute(text("SELECT 1"))
    except Exception as error:  # any driver error means "not ready"; reported, not raised
        return Check(ok=False, detail=f"{type(error).__name__}: {error}")
    return Check(ok=True, detail=session.get_bind().dialect.name)


def _check_ray(address: str | None) -> Check:
    if not address:
        return Check(ok=True, detail="embedded: each sweep driver starts a local Ray")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2.0):
            return Check(ok=True, detail=address)
    except (OSError, ValueError) as error:
        return Check(ok=False, detail=f"{address}: {error}")


def _check_mlflow(uri: str) -> Check:
    if uri.startswith(("http://", "https://")):
        try:
            answer = httpx.get(f"{uri.rstrip('/')}/health", timeout=2.0)
        except httpx.HTTPError as error:
            return Check(ok=False, detail=f"{uri}: {error}")
        return Check(ok=answer.is_success, detail=f"{uri}: HTTP {answer.status_code}")
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        return Check(ok=folder.is_dir(), detail=f"local store in {folder}")
    return Check(ok=True, detail=uri)
