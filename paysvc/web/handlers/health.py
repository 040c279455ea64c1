"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from aiohttp import web
from marshmallow import Schema, fields

from paysvc import __version__
from paysvc.web.io import container, doc, json_response
from paysvc.web.metrics import METRICS, render

routes = web.RouteTableDef()
READY_TIMEOUT = 5.0  # seconds: a probe that hangs is a probe that fails


class HealthOut(Schema):
    status = fields.String(required=True, metadata={"example": "ok"})
    version = fields.String(required=True)


class ReadyOut(Schema):
    status = fields.String(required=True, metadata={"example": "ready"})
    checks = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        metadata={"example": {"database": "ok", "gateway": "ok"}},
    )
    gateways = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


@doc(tags=["health"], summary="Liveness", responds=HealthOut)
@routes.get("/health")
async def health(_request: web.Request) -> web.Response:
    return json_response({"status": "ok", "version": __version__})


@doc(
    tags=["health"],
    summary="Readiness: database and the active gateway",
    description="503 (same body) names the failing check.",
    responds=ReadyOut,
    statuses=(503,),
)
@routes.get("/health/ready")
async def ready(request: web.Request) -> web.Response:
    services = container(request)
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(services.db.ping(), READY_TIMEOUT)
        checks["database"] = "ok"
    except Exception:  # unreachable, or no answer in time: not ready either way
        checks["database"] = "unavailable"
    try:
        gateways = await asyncio.wait_for(services.gateways.health(), READY_TIMEOUT)
    except TimeoutError:
        gateways = {name: "timeout" for name in services.gateways.names} | {"active": "none"}
    checks["gateway"] = "ok" if gateways["active"] != "none" else "unavailable"
    ok = all(value == "ok" for value in checks.values())
    return json_response(
        {"status": "ready" if ok else "unavailable", "checks": checks, "gateways": gateways},
        status=200 if ok else 503,
    )


@doc(
    tags=["health"],
    summary="Prometheus metrics (text exposition format)",
    content_type="text/plain",
)
@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return render(request.app[METRICS])
