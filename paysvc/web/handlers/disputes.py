"""`GET /payments/{id}/disputes` (service, admin)."""

from __future__ import annotations

from aiohttp import web

from paysvc.disputes.schemas import DisputeOut, render_dispute
from paysvc.schemas import ListQueryArgs
from paysvc.web.io import actor, container, doc, json_response, list_body, with_query
from paysvc.web.keys import QUERY

routes = web.RouteTableDef()


@doc(
    tags=["disputes"],
    summary="List a payment's disputes (service, admin)",
    responds=DisputeOut,
    many=True,
)
@routes.get("/payments/{id}/disputes")
@with_query(ListQueryArgs)
async def list_disputes(request: web.Request) -> web.Response:
    query = request[QUERY]
    page = await container(request).disputes.list(
        actor(request),
        request.match_info["id"],
        limit=query["limit"],
        starting_after=query["starting_after"],
    )
    return json_response(list_body([render_dispute(d) for d in page.items], page.has_more))
