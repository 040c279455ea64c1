"""`GET /admin/events`, `POST /admin/events/{id}/redeliver` (admin only)."""

from __future__ import annotations

from aiohttp import web

from paysvc.events.repository import EventFilter
from paysvc.events.schemas import EventListQuery, EventOut, RedeliverOut, render_event
from paysvc.web.io import actor, container, doc, json_response, with_query
from paysvc.web.keys import QUERY
from paysvc.web.listing import list_response

routes = web.RouteTableDef()
TAG = ["admin"]


@doc(
    tags=TAG,
    summary="List outgoing events with their delivery state, newest first (admin)",
    description="Filters: type, status (of any delivery: pending, delivered, failed, dead), "
    "payment_id, destination (order, notification, order-status). The read is audited.",
    responds=EventOut,
)
@routes.get("/admin/events")
@with_query(EventListQuery)
async def list_events(request: web.Request) -> web.Response:
    query = request[QUERY]
    return await list_response(
        request,
        container(request).events.list,
        EventFilter(
            type=query.get("type"),
            status=query.get("status"),
            payment_id=query.get("payment_id"),
            destination=query.get("destination"),
        ),
        lambda item: render_event(item.event, item.deliveries),
    )


@doc(
    tags=TAG,
    summary="Queue an event again for its destinations (admin)",
    description="202; receivers deduplicate on the event id (webhook-id). Audited.",
    responds=RedeliverOut,
    status=202,
)
@routes.post("/admin/events/{id}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    event_id = request.match_info["id"]
    queued = await container(request).events.redeliver(actor(request), event_id)
    return json_response(
        {"id": event_id, "object": "event_redelivery", "queued": queued}, status=202
    )
