"""Reading and writing JSON at the edge, validated by the same schemas that document it."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp_apispec import docs, querystring_schema, request_schema, response_schema
from marshmallow import Schema

from paysvc.auth.principal import Actor
from paysvc.bootstrap import Container
from paysvc.errors import InvalidRequest, MalformedRequest
from paysvc.schemas import load
from paysvc.web.keys import ACTOR, BODY, CONTAINER, QUERY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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

    instance = schema()  # built once: a schema is reusable, and costly to build per request

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            request[BODY] = load(instance, await read_json(request))
            return await handler(request)

        return request_schema(schema)(wrapper)  # type: ignore[no-any-return]

    return decorate


def with_query(schema: type[Schema]) -> Callable[[Handler], Handler]:
    instance = schema()

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            request[QUERY] = load(instance, dict(request.query))
            return await handler(request)

        return querystring_schema(schema)(wrapper)  # type: ignore[no-any-return]

    return decorate


def doc(
    *,
    tags: list[str],
    summary: str,
    description: str = "",
    responds: type[Schema] | None = None,
    status: int = 200,
) -> Callable[[Handler], Handler]:
    """OpenAPI documentation for a handler (typed wrapper over aiohttp-apispec)."""

    def decorate(handler: Handler) -> Handler:
        if responds is not None:
            handler = response_schema(responds, status)(handler)
        return docs(tags=tags, summary=summary, description=description)(handler)  # type: ignore[no-any-return]

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
