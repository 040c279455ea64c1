"""`/metrics` and the HTTP middleware over the container's `Metrics` (paysvc/metrics.py)."""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from paysvc.metrics import Metrics
from paysvc.web.io import Handler


def http_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        response = await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        labels = (request.method, route, str(response.status))
        metrics.http_requests.labels(*labels).inc()
        metrics.http_latency.labels(*labels).observe(time.perf_counter() - started)
        return response

    return measure


def render(metrics: Metrics) -> web.Response:
    """This container's families, then the process-wide default registry (process metrics
    and the gauges other modules register there)."""
    body = generate_latest(metrics.registry) + generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


METRICS = web.AppKey("metrics", Metrics)
