"""`GET /admin/audit`: parse, call the audit trail, render."""

from __future__ import annotations

from aiohttp import web

from paysvc.audit.schemas import AuditEntryOut, AuditListQuery, render_entry
from paysvc.audit.trail import AuditFilter
from paysvc.web.io import container, doc, with_query
from paysvc.web.keys import QUERY
from paysvc.web.listing import list_response

routes = web.RouteTableDef()


@doc(
    tags=["admin"],
    summary="List audit entries, newest first (admin); the read is itself audited",
    responds=AuditEntryOut,
    many=True,
)
@routes.get("/admin/audit")
@with_query(AuditListQuery)
async def list_audit(request: web.Request) -> web.Response:
    query = request[QUERY]
    return await list_response(
        request,
        container(request).audit_trail.list,
        AuditFilter(
            since=query.get("since"),
            until=query.get("until"),
            resource_id=query.get("resource_id"),
            actor_id=query.get("actor_id"),
        ),
        render_entry,
    )
