"""Liveness, readiness and metrics."""

from __future__ import annotations

from aiohttp import web

from paysvc import __version__
from paysvc.web.io import container, doc, json_response
from paysvc.web.metrics import METRICS

routes = web.RouteTableDef()


@doc(tags=["health"], summary="Liveness")
@routes.get("/health")
async def health(_request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


@doc(tags=["health"], summary="Readiness: database and the active gateway")
@routes.get("/health/ready")
async def ready(request: web.Request) -> web.Response:
    services = container(request)
    checks: dict[str, str] = {}
    try:
        await services.db.ping()
        checks["database"] = "ok"
    except Exception:
        checks["database"] = "unavailable"
    gateways = await services.gateways.health()
    checks["gateway"] = "ok" if gateways["active"] != "none" else "unavailable"
    ok = all(value == "ok" for value in checks.values())
    return json_response(
        {"status": "ready" if ok else "unavailable", "checks": checks, "gateways": gateways},
        status=200 if ok else 503,
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return request.app[METRICS].render()
