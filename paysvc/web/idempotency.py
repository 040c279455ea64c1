"""The Idempotency-Key middleware (installed after authentication: keys are per principal,
and a request that authentication rejects never touches the key)."""

from __future__ import annotations

import json
import logging

from aiohttp import web

from paysvc.errors import MalformedRequest
from paysvc.idempotency.service import Claim, KeyedRequest, fingerprint, valid_key
from paysvc.web.io import Handler
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
    resource = request.match_info.route.resource
    outcome = await service.begin(
        KeyedRequest(
            principal=f"{actor.role}:{actor.id}",
            key=key,
            method=request.method,
            path=resource.canonical if resource is not None else "unmatched",
            fingerprint=fingerprint(request.method, request.path, body),
            request_id=request.get(REQUEST_ID),
        )
    )
    if not isinstance(outcome, Claim):
        replay = web.Response(
            status=outcome.status, text=outcome.body, content_type="application/json"
        )
        replay.headers["Idempotent-Replayed"] = "true"
        if outcome.request_id:
            replay.headers["Original-Request"] = outcome.request_id
        return replay
    response = await respond(request, handler)
    try:
        if isinstance(response, web.Response) and _is_result(response):
            assert isinstance(response.body, bytes)
            await service.complete(outcome, response.status, response.body.decode())
        else:
            await service.release(outcome)
    except Exception:
        # The response stands; the key stays in flight until it goes stale and a retry
        # resumes the operation from its recovery point.
        log.exception(
            "could not record an idempotent result", extra={"request_id": request.get(REQUEST_ID)}
        )
    return response


def _is_result(response: web.Response) -> bool:
    """True when the response is the result of an execution, to be replayed."""
    if response.status in NOT_STORED or not isinstance(response.body, bytes):
        return False
    if response.status == 409:
        try:
            code = json.loads(response.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return True
        return code not in NOT_STORED_CODES
    return True
