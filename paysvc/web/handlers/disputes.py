"""`GET /payments/{id}/disputes` (service, admin)."""

from __future__ import annotations

from aiohttp import web

from paysvc.disputes.schemas import DisputeOut, render_dispute
from paysvc.schemas import ListQueryArgs
from paysvc.web.io import container, doc, with_query
from paysvc.web.listing import list_response

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
    return await list_response(
        request, container(request).disputes.list, request.match_info["id"], render_dispute
    )
