"""OpenAPI 3.1 from the marshmallow schemas that validate requests, and Swagger UI at /docs.

Handlers carry an `Operation` (filled by `doc`, `with_body` and `with_query` in `web/io.py`);
`build_spec` walks the app's routes once at start-up and turns every documented route into an
operation with apispec: request bodies and query parameters from the validating schemas, the
success response, every error response the middlewares and the operation can produce (all in
the contract's error shape), the `Idempotency-Key` and `X-Request-Id` headers, and the bearer
security scheme (public routes opt out). A list response is the contract's envelope around the
item schema. Every asset of the docs page is served from this process (no CDN).
"""

from __future__ import annotations

import functools
import json
from typing import Any

import swagger_ui_bundle
from aiohttp import web
from marshmallow import Schema, fields, validate

from paysvc import __version__
from paysvc.payments.schemas import PaymentOut
from paysvc.web.headers import STATIC_PREFIX
from paysvc.web.io import OPENAPI_ATTR, Operation
from paysvc.web.middlewares import is_public

SPEC_PATH = "/openapi.json"
DOCS_PATH = "/docs"
ERROR_TYPES = (
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found",
    "state_conflict",
    "idempotency_error",
    "card_error",
    "rate_limit_error",
    "gateway_error",
    "api_error",
)
STATUS_TEXT = {
    400: "Malformed request (invalid_request_error): invalid JSON, an invalid "
    "`Idempotency-Key`, or for webhooks a missing, wrong or stale signature",
    401: "No, bad, expired or unverifiable token (authentication_error)",
    402: "The gateway declined (card_error, with `decline_code` and the `payment`)",
    403: "Authenticated, but the role may not do this (permission_error)",
    404: "No such resource, or not yours (not_found)",
    409: "Not allowed from the current status (state_conflict), or the `Idempotency-Key` is in "
    "use by a request still running (idempotency_error)",
    413: "Body larger than 64 KiB (invalid_request_error)",
    415: "Content-Type is not application/json (invalid_request_error)",
    422: "Failed validation, `param` names the field (invalid_request_error), or the "
    "`Idempotency-Key` was used with another request (idempotency_error)",
    429: "Rate limited (rate_limit_error); retry after `Retry-After` seconds",
    500: "Unexpected error, logged with the request id (api_error)",
    502: "The gateway failed (gateway_error)",
    503: "The database, the gateway or the auth service is unreachable (api_error, "
    "gateway_error); retry after `Retry-After` with the same `Idempotency-Key`",
}


class ErrorObjectOut(Schema):
    type = fields.String(required=True, validate=validate.OneOf(ERROR_TYPES))
    code = fields.String(required=True, metadata={"example": "parameter_invalid"})
    message = fields.String(required=True)
    param = fields.String(
        required=True, allow_none=True, metadata={"description": "the field at fault"}
    )
    request_id = fields.String(required=True, allow_none=True)
    decline_code = fields.String(
        allow_none=True, metadata={"description": "card_error only: the bank's reason"}
    )
    payment = fields.Nested(
        PaymentOut,
        metadata={"description": "card_error only: the payment, now failed (or unchanged)"},
    )


class ErrorOut(Schema):
    """Every error, always this shape."""

    error = fields.Nested(ErrorObjectOut, required=True)


@functools.cache
def list_envelope(item: type[Schema]) -> type[Schema]:
    """`{"object": "list", "data": [...], "has_more", "next_cursor"}` around `item`."""
    name = _name(item)
    attributes: dict[str, Any] = {
        "object": fields.Constant("list", required=True),
        "data": fields.List(fields.Nested(item), required=True),
        "has_more": fields.Boolean(required=True),
        "next_cursor": fields.String(
            required=True, allow_none=True, metadata={"description": "pass as starting_after"}
        ),
    }
    envelope: type[Schema] = Schema.from_dict(attributes, name=f"{name}ListOut")
    return envelope


def _name(schema: Any) -> str:
    """`PaymentOut` → `Payment`: components are named after the contract's objects."""
    from apispec.ext.marshmallow.common import resolve_schema_cls

    resolved = resolve_schema_cls(schema)
    name: str = (resolved[0] if isinstance(resolved, list) else resolved).__name__
    for suffix in ("Out", "Schema"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _error_codes(path: str, method: str, op: Operation) -> list[int]:
    codes = {500, 503, *op.errors}
    if not is_public(path):
        codes |= {401, 403, 429}
    if "{" in path:
        codes.add(404)
    if op.body is not None:
        codes |= {400, 413, 415, 422}
    if op.query is not None:
        codes.add(422)
    if method in ("post", "put") and not is_public(path):
        codes |= {400, 409, 422}  # Idempotency-Key: malformed, in use, reused
    return sorted(codes)


def _success(op: Operation, status: int, idempotent: bool) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": "OK" if status < 300 else "Accepted",
        "headers": {"X-Request-Id": _ref("headers", "XRequestId")},
    }
    if idempotent:
        response["headers"]["Idempotent-Replayed"] = _ref("headers", "IdempotentReplayed")
    if op.responds is not None:
        schema = list_envelope(op.responds) if op.many else op.responds
        response["content"] = {op.content_type: {"schema": schema}}
    elif op.content_type != "application/json":
        response["content"] = {op.content_type: {"schema": {"type": "string"}}}
    return response


def _operation(path: str, method: str, op: Operation) -> dict[str, Any]:
    parameters: list[Any] = ["XRequestId"]
    parameters += [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
        for name in _path_keys(path)
    ]
    if op.query is not None:
        parameters.append({"in": "query", "schema": op.query})
    idempotent = method in ("post", "put") and not is_public(path)
    if idempotent:
        parameters.append("IdempotencyKey")
    responses: dict[str, Any] = {
        str(status): _success(op, status, idempotent) for status in (op.status, *op.statuses)
    }
    for status in _error_codes(path, method, op):
        error: dict[str, Any] = {
            "description": STATUS_TEXT.get(status, "Error"),
            "headers": {"X-Request-Id": _ref("headers", "XRequestId")},
            "content": {"application/json": {"schema": _ref("schemas", "Error")}},
        }
        if status in (429, 503):
            error["headers"]["Retry-After"] = _ref("headers", "RetryAfter")
        responses[str(status)] = error
    result: dict[str, Any] = {
        "tags": op.tags,
        "summary": op.summary,
        "operationId": _operation_id(path, method),
        "parameters": parameters,
        "responses": responses,
    }
    if op.description:
        result["description"] = op.description
    if is_public(path):
        result["security"] = []
    if op.body is not None:
        content: dict[str, Any] = {"schema": op.body}
        if op.example is not None:
            content["example"] = op.example
        required = any(field.required for field in op.body().fields.values())
        result["requestBody"] = {"required": required, "content": {"application/json": content}}
    return result


def _path_keys(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _operation_id(path: str, method: str) -> str:
    """`POST /payments/{id}/refunds` → `post_payments_id_refunds` (stable, unique)."""
    words = [p.strip("{}").replace("-", "_").replace(".", "_") for p in path.split("/") if p]
    return "_".join([method, *words])


def _nullable_enums(node: Any) -> Any:
    """`{type: [string, null], enum: [a, b, null]}` → `{enum: [a, b, null]}`: the same values,
    and client generators then make one optional enum instead of one type per branch."""
    if isinstance(node, dict):
        kind = node.get("type")
        if isinstance(kind, list) and "null" in kind and None in node.get("enum", ()):
            node = {key: value for key, value in node.items() if key != "type"}
        return {key: _nullable_enums(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_nullable_enums(item) for item in node]
    return node


def _constant(_converter: Any, field: fields.Field[Any], **_kwargs: Any) -> dict[str, Any]:
    """`fields.Constant("payment")` → a one-value enum (apispec leaves it untyped)."""
    if not isinstance(field, fields.Constant):
        return {}
    kind = {bool: "boolean", int: "integer", str: "string"}.get(type(field.constant), "string")
    return {"type": kind, "enum": [field.constant]}


def build_spec(app: web.Application) -> dict[str, Any]:
    # apispec: loaded by the first request for the spec, not by every server
    from apispec import APISpec
    from apispec.ext.marshmallow import MarshmallowPlugin

    marshmallow = MarshmallowPlugin(schema_name_resolver=_name)
    spec = APISpec(
        title="paysvc",
        version=__version__,
        openapi_version="3.1.0",
        plugins=[marshmallow],
        info={
            "description": "Payment intents, confirmation, capture, cancellation, refunds, "
            "disputes and admin views. Money is an integer in the currency's minor unit. "
            "Use **Authorize** with a bearer token (`paysvc token mint`)."
        },
        security=[{"bearerAuth": []}],
    )
    assert marshmallow.converter is not None
    marshmallow.converter.add_attribute_function(_constant)  # type: ignore[no-untyped-call]
    spec.components.security_scheme(
        "bearerAuth",
        {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
    )
    spec.components.schema("Error", schema=ErrorOut)
    spec.components.header(
        "XRequestId",
        {"description": "The request id (echoed, or generated)", "schema": {"type": "string"}},
    )
    spec.components.header(
        "RetryAfter", {"description": "Seconds to wait", "schema": {"type": "integer"}}
    )
    spec.components.header(
        "IdempotentReplayed",
        {
            "description": "`true` when this is the stored answer to an earlier request with "
            "the same `Idempotency-Key`",
            "schema": {"type": "string", "enum": ["true"]},
        },
    )
    spec.components.parameter(
        "XRequestId",
        "header",
        {
            "name": "X-Request-Id",
            "required": False,
            "description": "1 to 64 characters `[A-Za-z0-9._-]`, echoed in the response",
            "schema": {"type": "string", "maxLength": 64, "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
        },
    )
    spec.components.parameter(
        "IdempotencyKey",
        "header",
        {
            "name": "Idempotency-Key",
            "required": False,
            "description": "1 to 255 printable ASCII characters: a retry with the same key and "
            "request replays the stored answer (`Idempotent-Replayed: true`)",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
    )
    for route in app.router.routes():
        method = route.method.lower()
        op = getattr(route.handler, OPENAPI_ATTR, None)
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if method == "head" or op is None or not path:
            continue  # HEAD mirrors GET; undocumented routes stay out
        spec.path(path=path, operations={method: _operation(path, method, op)})
    document = _nullable_enums(spec.to_dict())
    assert isinstance(document, dict)
    return document


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>paysvc API</title>
<link rel="stylesheet" type="text/css" href="{static}/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/favicon-32x32.png" sizes="32x32">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{static}/swagger-ui-bundle.js"></script>
<script src="{static}/swagger-ui-standalone-preset.js"></script>
<script>
window.onload = function () {{
  window.ui = SwaggerUIBundle({{
    url: "{spec}",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
    validatorUrl: null
  }});
}};
</script>
</body>
</html>
"""


def setup_docs(app: web.Application) -> None:
    """`GET /openapi.json`, `GET /docs` (HEAD too) and Swagger UI's assets, all local. The spec
    is built on its first request, from the running app's routes (fixed once it started), and
    kept: a server nobody asks for it never holds it (idle RSS)."""
    page = _PAGE.format(static=STATIC_PREFIX, spec=SPEC_PATH)
    spec: bytes | None = None

    async def openapi(request: web.Request) -> web.Response:
        nonlocal spec
        if spec is None:
            spec = json.dumps(build_spec(request.app)).encode()
        return web.Response(body=spec, content_type="application/json")

    async def docs(_request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get(SPEC_PATH, openapi)
    app.router.add_get(DOCS_PATH, docs)
    app.router.add_static(STATIC_PREFIX, swagger_ui_bundle.swagger_ui_path)
