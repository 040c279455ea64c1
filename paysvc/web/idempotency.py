"""The Idempotency-Key middleware (installed after authentication: keys are per principal,
and a request that authentication rejects never touches the key)."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from paysvc.errors import MalformedRequest
from paysvc.idempotency.service import (
    CURRENT_CLAIM,
    Claim,
    KeyedRequest,
    Reattach,
    fingerprint,
    in_use,
    valid_key,
)
from paysvc.web.io import Handler, json_response
from paysvc.web.keys import ACTOR, CONTAINER, REQUEST_ID
from paysvc.web.middlewares import respond

log = logging.getLogger("paysvc.web")
HEADER = "Idempotency-Key"
METHODS = frozenset({"POST", "PUT"})
# Rejected before anything executed (validation, auth, rate limit, service unavailable):
# not stored, the key may be used again.
NOT_STORED = frozenset({400, 401, 403, 413, 415, 422, 429, 503})
# A conflict with a request executing concurrently is not a result either (Stripe).
NOT_STORED_CODES = frozenset({"operation_in_progress"})


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.headers.get(HEADER)
    actor = request.get(ACTOR)
    if key is None or actor is None or request.method not in METHODS:
        return await handler(request)
    if not valid_key(key):
        raise MalformedRequest(
            "Idempotency-Key must be 1-255 printable ASCII characters",
            code="idempotency_key_invalid",
            param=HEADER,
        )
    service = request.app[CONTAINER].idempotency
    body = await request.read()  # cached for the handler; over 64 KiB -> 413, nothing stored
    outcome = await service.begin(
        KeyedRequest(
            principal=f"{actor.role}:{actor.id}",
            key=key,
            method=request.method,
            path=request.path,
            fingerprint=fingerprint(request.method, request.path, body),
            request_id=request.get(REQUEST_ID),
        )
    )
    if isinstance(outcome, Reattach):
        return await _reattach(request, outcome)
    if not isinstance(outcome, Claim):
        replay = web.Response(
            status=outcome.status, text=outcome.body, content_type="application/json"
        )
        replay.headers["Idempotent-Replayed"] = "true"
        if outcome.request_id:
            replay.headers["Original-Request"] = outcome.request_id
        return replay
    claimed = CURRENT_CLAIM.set(outcome)  # phase 1 records what it creates on the key's row
    try:
        response = await respond(request, handler)
    finally:
        CURRENT_CLAIM.reset(claimed)
    try:
        if isinstance(response, web.Response) and _is_result(response):
            assert isinstance(response.body, bytes)
            await service.complete(outcome, response.status, response.body.decode())
        else:
            await service.release(outcome, outage=_code(response) == "service_unavailable")
    except Exception:
        # The response stands; the key stays in flight until it goes stale and a retry
        # resumes the operation from its recovery point.
        log.exception(
            "could not record an idempotent result", extra={"request_id": request.get(REQUEST_ID)}
        )
    return response


async def _reattach(request: web.Request, reattach: Reattach) -> web.Response:
    """A retry after its first attempt crashed (or lost its response): answer with the outcome
    of what that attempt created, completed by the completer; never execute again."""
    container = request.app[CONTAINER]
    answer = await container.completer.resume(reattach.resource_id, reattach.path)
    if answer is None:
        raise in_use()
    status, body = answer
    response = json_response(body, status=status)
    response.headers["Idempotent-Replayed"] = "true"
    if _is_result(response):
        assert isinstance(response.body, bytes)
        await container.idempotency.complete_reattached(reattach, status, response.body.decode())
    else:
        await container.idempotency.forget(reattach)  # nothing moved: the key is free again
    return response


def _code(response: web.StreamResponse) -> str | None:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return None
    try:
        return str(json.loads(response.body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _is_result(response: web.Response) -> bool:
    """True when the response is the result of an execution, to be replayed."""
    if response.status in NOT_STORED or not isinstance(response.body, bytes):
        return False
    if response.status == 409:
        return _code(response) not in NOT_STORED_CODES
    return True
