"""The audit entry object and the `GET /admin/audit` query."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import Schema, fields, validate

from paysvc.audit.models import AuditEntry
from paysvc.clock import rfc3339
from paysvc.schemas import ListQueryArgs


class AuditListQuery(ListQueryArgs):
    since = fields.AwareDateTime(
        default_timezone=None, metadata={"description": "occurred_at >= since (RFC 3339)"}
    )
    until = fields.AwareDateTime(
        default_timezone=None, metadata={"description": "occurred_at < until (RFC 3339)"}
    )
    resource_id = fields.String(validate=validate.Length(min=1, max=64))
    actor_id = fields.String(validate=validate.Length(min=1, max=64))


class AuditActorOut(Schema):
    id = fields.String()
    role = fields.String()


class AuditResourceOut(Schema):
    type = fields.String()
    id = fields.String(allow_none=True)


class AuditEntryOut(Schema):
    """An audit entry (documentation of the rendered shape)."""

    id = fields.String(metadata={"example": "aud_3xY…"})
    object = fields.Constant("audit_entry")
    occurred_at = fields.String()
    actor = fields.Nested(AuditActorOut)
    action = fields.String(metadata={"example": "payment.captured"})
    resource = fields.Nested(AuditResourceOut)
    outcome = fields.String(metadata={"example": "success"})
    origin = fields.String(metadata={"description": "client IP, cli:<host> or system"})
    request_id = fields.String(allow_none=True)
    details = fields.Dict()


def render_entry(entry: AuditEntry) -> dict[str, Any]:
    try:
        details = json.loads(entry.details)
    except (TypeError, ValueError):
        details = {"raw": entry.details}
    return {
        "id": entry.id,
        "object": "audit_entry",
        "occurred_at": rfc3339(entry.occurred_at),
        "actor": {"id": entry.actor_id, "role": entry.actor_role},
        "action": entry.action,
        "resource": {"type": entry.resource_type, "id": entry.resource_id},
        "outcome": entry.outcome,
        "origin": entry.origin,
        "request_id": entry.request_id,
        "details": details,
    }
