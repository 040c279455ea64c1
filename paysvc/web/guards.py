"""Request guards: rate limits (per client IP, then per principal) and the PCI body check.

Order in the middleware chain (see `create_app`):

    error -> ip_rate_limit -> auth -> principal_rate_limit -> pci_guard -> (idempotency) -> handler

- `ip_rate_limit` (before auth): requests without credentials (and the public docs) spend from
  their client IP's bucket; requests *with* a bearer token spend from it only when the token is
  refused, and once that bucket is empty a refused token gets 429 instead of 401 — so guessing
  tokens is limited per IP, while callers with valid credentials are limited per principal only
  (never by what others behind the same IP do). `/health*`, `/metrics` and `/webhooks/*` are
  exempt (probes, scrapers and Stripe's retries must never be throttled).
- `principal_rate_limit` (after auth): one bucket per authenticated principal (role + id).
- `pci_guard` (after auth, before anything reads the body for storage — the idempotency layer
  included): in `PCI_COMPLIANCE_MODE=strict`, any body holding a card number or a card-data field
  name is rejected with 422 `raw_card_data` naming the JSON path (never the value). Webhooks are
  exempt: they are Stripe's own signed payloads, verified against the signing secret, and the
  signature covers the exact bytes — rejecting them would only make Stripe retry forever.

Buckets live in the app (`RATE_LIMITS`), in process: see `paysvc.web.ratelimit` for the
multi-instance trade-off. Behind a proxy, the client IP is the proxy's unless the proxy's
`X-Forwarded-For` is applied to `request.remote` (aiohttp-remotes) — operators configure that.
"""

from __future__ import annotations

import json

from aiohttp import web

from paysvc.errors import AuthenticationFailed, RateLimited
from paysvc.web.io import Handler, container
from paysvc.web.keys import ACTOR
from paysvc.web.middlewares import is_public
from paysvc.web.pci import reject_card_data
from paysvc.web.ratelimit import Limiter, retry_after

RATE_LIMITS = web.AppKey("rate_limits", Limiter)
_UNLIMITED = ("/health", "/metrics", "/webhooks/")


def rate_limited_path(path: str) -> bool:
    return not (path == "/metrics" or path.startswith(_UNLIMITED))


def _refuse(wait: float) -> RateLimited:
    return RateLimited("Too many requests; retry later", retry_after=retry_after(wait))


def _ip_key(request: web.Request) -> str:
    return f"ip:{request.remote or 'unknown'}"


@web.middleware
async def ip_rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not rate_limited_path(request.path):
        return await handler(request)
    limiter = request.app[RATE_LIMITS]
    key = _ip_key(request)
    if is_public(request.path) or not request.headers.get("Authorization", "").strip():
        if (wait := await limiter.take(key)) is not None:
            raise _refuse(wait)
        return await handler(request)
    try:
        return await handler(request)
    except AuthenticationFailed as refused:
        if (wait := await limiter.take(key)) is not None:
            raise _refuse(wait) from refused
        raise


@web.middleware
async def principal_rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    principal = request.get(ACTOR)
    if principal is not None and rate_limited_path(request.path):
        wait = await request.app[RATE_LIMITS].take(f"{principal.role}:{principal.id}")
        if wait is not None:
            raise _refuse(wait)
    return await handler(request)


@web.middleware
async def pci_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (
        request.body_exists
        and not request.path.startswith("/webhooks/")
        and container(request).settings.pci_compliance_mode == "strict"
    ):
        raw = await request.read()  # cached: the handler reads the same bytes again
        try:
            body: object = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # Not JSON (the handler answers 400/415): still never let a card number through.
            body = raw.decode("utf-8", errors="replace")
        reject_card_data(body)
    return await handler(request)
