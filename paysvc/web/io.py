"""Reading and writing JSON at the edge, validated by the same schemas that document it."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from marshmallow import Schema

from paysvc.auth.principal import Actor
from paysvc.bootstrap import Container
from paysvc.errors import InvalidRequest, MalformedRequest
from paysvc.schemas import load
from paysvc.web.keys import ACTOR, BODY, CONTAINER, QUERY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPENAPI_ATTR = "__paysvc_openapi__"


@dataclass
class Operation:
    """What a handler documents in OpenAPI (built by `web/openapi.py`)."""

    tags: list[str] = field(default_factory=list)
    summary: str = ""
    description: str = ""
    body: type[Schema] | None = None
    query: type[Schema] | None = None
    responds: type[Schema] | None = None
    many: bool = False  # `responds` is the item of a list envelope
    status: int = 200
    statuses: tuple[int, ...] = ()  # other successes (202 from confirm …)
    errors: tuple[int, ...] = ()  # errors of the operation itself (402, 409, 502 …)
    example: dict[str, Any] | None = None
    content_type: str = "application/json"


def operation_of(handler: Handler) -> Operation:
    """The handler's documentation (shared with its wrappers: `functools.wraps` copies it)."""
    found = getattr(handler, OPENAPI_ATTR, None)
    if not isinstance(found, Operation):
        found = Operation()
        setattr(handler, OPENAPI_ATTR, found)
    return found


async def read_json(request: web.Request) -> Any:
    if not request.body_exists:
        return {}
    if request.content_type != "application/json":
        raise InvalidRequest(
            "Content-Type must be application/json", code="unsupported_media_type", http_status=415
        )
    raw = await request.read()  # bounded by client_max_size (64 KiB) -> 413
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedRequest("The request body is not valid JSON") from None
    except RecursionError:  # e.g. 30 000 nested arrays fit in 64 KiB
        raise MalformedRequest("The request body is nested too deeply") from None


def with_body(schema: type[Schema]) -> Callable[[Handler], Handler]:
    """Validate the JSON body with `schema` into request[BODY]; document it in OpenAPI."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            request[BODY] = load(schema(), await read_json(request))
            return await handler(request)

        operation_of(wrapper).body = schema
        return wrapper

    return decorate


def with_query(schema: type[Schema]) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            request[QUERY] = load(schema(), dict(request.query))
            return await handler(request)

        operation_of(wrapper).query = schema
        return wrapper

    return decorate


def doc(
    *,
    tags: list[str],
    summary: str,
    description: str = "",
    responds: type[Schema] | None = None,
    many: bool = False,
    status: int = 200,
    statuses: tuple[int, ...] = (),
    errors: tuple[int, ...] = (),
    example: dict[str, Any] | None = None,
    content_type: str = "application/json",
) -> Callable[[Handler], Handler]:
    """Document a handler in OpenAPI: `responds` is the success body (`many`: a list of
    them), `errors` the error statuses of the operation itself (the generic ones — auth,
    validation, idempotency, 404 on `{id}` paths, 429, 500, 503 — are added for it)."""

    def decorate(handler: Handler) -> Handler:
        operation = operation_of(handler)
        operation.tags = tags
        operation.summary = summary
        operation.description = description
        operation.responds = responds
        operation.many = many
        operation.status = status
        operation.statuses = statuses
        operation.errors = errors
        operation.example = example
        operation.content_type = content_type
        return handler

    return decorate


def actor(request: web.Request) -> Actor:
    return request[ACTOR]


def container(request: web.Request) -> Container:
    return request.app[CONTAINER]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


def list_body(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "next_cursor": items[-1]["id"] if has_more and items else None,
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
