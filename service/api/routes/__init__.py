"""HTTP routers. Add a router to `ROUTERS` and `service.api.app.create_app` mounts it."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.routes.health import router as health_router
from service.api.routes.schedules import router as schedules_router
from service.api.routes.sweeps import router as sweeps_router

ROUTERS: list[APIRouter] = [health_router, sweeps_router, schedules_router]
