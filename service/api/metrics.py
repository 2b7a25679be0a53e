"""Prometheus metrics: sweeps by status, trials run and queue length (read from the DB at scrape), request latency."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.queue import store
from service.queue.db import session_scope

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


class _DbCollector(Collector):
    """Sweep gauges from the DB, so they are right after a restart and across processes."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator:
        with session_scope(self.session_factory) as session:
            counts = store.count_by_status(session)
            trials = store.trials_run(session)
        sweeps = GaugeMetricFamily("rdvae_sweeps", "Sweeps by status.", labels=["status"])
        for status in STATUSES:
            sweeps.add_metric([status], counts.get(status, 0))
        yield sweeps
        queued = counts.get("queued", 0)
        yield GaugeMetricFamily("rdvae_queue_length", "Sweeps waiting for a runner slot.", value=queued)
        yield CounterMetricFamily("rdvae_trials_run", "Trials that ended (completed, stopped or failed).", value=trials)


class Metrics:
    """A registry per app (tests build several apps in one process)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_DbCollector(session_factory))
        self.latency = Histogram(
            "rdvae_http_request_duration_seconds",
            "Request latency by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )


class LatencyMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead); labels by route template to keep cardinality bounded."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            self.metrics.latency.labels(scope["method"], template, str(status)).observe(time.perf_counter() - start)


class BodyLimitMiddleware:
    """413 for request bodies over `max_bytes`, declared (Content-Length) or streamed (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body larger than {limit} bytes","limit":"max_body_bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
