"""Request id, error rendering and authentication middlewares."""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from aiohttp import web
from sqlalchemy.exc import DBAPIError

from paysvc.auth.principal import Actor, Role
from paysvc.db.engine import database_unreachable
from paysvc.errors import (
    AuthenticationFailed,
    InvalidRequest,
    MalformedRequest,
    NotFound,
    PaysvcError,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
)
from paysvc.logs import payment_id_var, redact, request_id_var
from paysvc.web.auth import AUTHENTICATOR
from paysvc.web.io import Handler, json_response
from paysvc.web.keys import ACTOR, CONTAINER, REQUEST_ID
from paysvc.web.pci import contains_card_number

log = logging.getLogger("paysvc.web")
access_log = logging.getLogger("paysvc.access")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
RETRY_AFTER = 5  # seconds, while the database is unreachable
PUBLIC_PREFIXES = (
    "/health",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/webhooks/",
    "/static/swagger",
    "/sandbox/3ds/",  # the customer's browser, holding the page's unguessable token
)


def is_public(path: str) -> bool:
    return path in ("/health", "/metrics", "/openapi.json") or path.startswith(PUBLIC_PREFIXES)


def safe_request_id(incoming: str) -> str:
    """The client's X-Request-Id when it is 1-64 of `[A-Za-z0-9._-]` and not a card number
    (it is echoed, logged and audited), else a fresh one."""
    if _REQUEST_ID.fullmatch(incoming) and not contains_card_number(incoming):
        return incoming
    return "req_" + secrets.token_hex(12)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id (header, request state and the logging context) and one access-log line.

    The access line names the route template (`/payments/{id}`), never the raw path or query
    string, and no header: nothing a client sent can leak into the log through it.
    """
    request_id = safe_request_id(request.headers.get("X-Request-Id", ""))
    request[REQUEST_ID] = request_id
    context = request_id_var.set(request_id)
    payment_context = payment_id_var.set(None)  # keep-alive: no id left from the last request
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-Id"] = request_id
        return response
    except web.HTTPException as http:  # redirects and the like pass through error rendering
        status = http.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        # Probes poll every few seconds: their lines are DEBUG, out of the way at LOG_LEVEL=info.
        access_log.log(
            logging.DEBUG if route.startswith("/health") else logging.INFO,
            "%s %s %d",
            request.method,
            route,
            status,
            extra={
                "method": request.method,
                "route": route,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                "request_id": request_id,
            },
        )
        request_id_var.reset(context)
        payment_id_var.reset(payment_context)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await respond(request, handler)


async def respond(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Run the handler; any error becomes the contract's error response (used by the error
    middleware, and by the idempotency middleware, which stores what the client will see)."""
    try:
        return await handler(request)
    except PaysvcError as error:
        await _audit_denial(request, error)
        return render_error(request, error)
    except (DBAPIError, OSError) as error:
        if not database_unreachable(error):
            log.exception("unhandled error", extra={"request_id": request.get(REQUEST_ID)})
            return render_error(request, PaysvcError("An unexpected error occurred"))
        log.warning(
            "database unreachable: %s",
            type(error).__name__,
            extra={"request_id": request.get(REQUEST_ID)},
        )
        return render_error(
            request,
            ServiceUnavailable(
                "The service cannot reach its database; retry shortly", retry_after=RETRY_AFTER
            ),
        )
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        return render_error(request, _from_http(http_error))
    except Exception:
        log.exception("unhandled error", extra={"request_id": request.get(REQUEST_ID)})
        return render_error(request, PaysvcError("An unexpected error occurred"))


def render_error(request: web.Request, error: PaysvcError) -> web.Response:
    response = json_response(
        {"error": error.body(request.get(REQUEST_ID))}, status=error.http_status
    )
    if isinstance(error, RateLimited | ServiceUnavailable):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def _from_http(error: web.HTTPException) -> PaysvcError:
    if error.status == 404:
        return NotFound("No such route")
    if error.status == 405:
        return InvalidRequest("Method not allowed", code="method_not_allowed", http_status=405)
    if error.status == 413:
        return InvalidRequest(
            "The request body is larger than 64 KiB", code="request_too_large", http_status=413
        )
    if error.status == 400:
        return MalformedRequest("Malformed request")
    return PaysvcError("Request failed", code="http_error", http_status=error.status)


async def _audit_denial(request: web.Request, error: PaysvcError) -> None:
    """401, 403 and 404-for-not-yours are audited, in a unit of work of their own."""
    if not isinstance(error, AuthenticationFailed | PermissionDenied) and error.denied is None:
        return
    container = request.app[CONTAINER]
    known = request.get(ACTOR)
    who = Actor(
        id=known.id if known else "anonymous",
        role=known.role if known else Role.CUSTOMER,
        origin=_origin(request),
        request_id=request.get(REQUEST_ID),
    )
    path = redact(request.path)  # a path is client input: never store a card number or email
    resource_type, resource_id = error.denied or ("route", path[:64])

    async def work(session: Any) -> None:
        container.audit.record(
            session,
            who,
            f"access.{error.code}",
            resource_type,
            resource_id,
            outcome="denied",
            details={"method": request.method, "path": path, "status": error.http_status},
        )

    try:
        await container.db.run(work)
    except Exception:
        log.exception("could not audit a denied request")


def _origin(request: web.Request) -> str:
    return request.remote or "unknown"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_public(request.path):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("A bearer token is required")
    claims = await request.app[AUTHENTICATOR].authenticate(token.strip())
    request[ACTOR] = Actor(
        id=claims.subject,
        role=claims.role,
        origin=_origin(request),
        request_id=request.get(REQUEST_ID),
    )
    return await handler(request)
