"""The sandbox's 3-D Secure page: what a card issuer's challenge is to a real customer.

`GET /sandbox/3ds/{token}` shows the amount and the merchant with "Complete" and "Fail"
buttons; `POST` records the choice in the sandbox ledger, settles the payment (as Stripe's
webhook would) and sends the browser to the payment's `return_url`. A small self-contained
page: no script, one inline style allowed by its hash, no external assets. Registered only
while the sandbox gateway is configured; the token is random and bound to one charge.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from paysvc.auth.principal import Actor, Role
from paysvc.gateways.sandbox import AUTH_PATH, Challenge, SandboxGateway
from paysvc.money import Money
from paysvc.web.io import container
from paysvc.web.keys import REQUEST_ID

routes = web.RouteTableDef()
log = logging.getLogger(__name__)
MERCHANT = "paysvc sandbox shop"
OUTCOMES = {"complete": True, "fail": False}

_STYLE = (
    "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;padding:2rem}"
    "main{max-width:26rem;margin:auto;background:#fff;border-radius:8px;padding:1.5rem;"
    "box-shadow:0 1px 4px rgba(0,0,0,.15)}"
    "h1{font-size:1.2rem;margin-top:0}"
    "dl{display:grid;grid-template-columns:auto 1fr;gap:.4rem 1rem}"
    "dt{color:#555}dd{margin:0;font-weight:600}form{display:flex;gap:1rem;margin-top:1.5rem}"
    "button{flex:1;padding:.7rem;border:0;border-radius:6px;font-size:1rem;cursor:pointer}"
    ".complete{background:#1a7f37;color:#fff}.fail{background:#cf222e;color:#fff}"
    "p.note{color:#555;font-size:.85rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()


def _sandbox(request: web.Request) -> SandboxGateway:
    sandbox = container(request).gateways.sandbox
    assert sandbox is not None  # the routes exist only with the sandbox configured
    return sandbox


def _origin(url: str | None) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    return f" {parts.scheme}://{parts.netloc}"


def _page(
    title: str, body: str, *, status: int = 200, return_url: str | None = None
) -> web.Response:
    text = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    response = web.Response(text=text, status=status, content_type="text/html")
    # Its own policy: the page's one style, forms to itself, and the redirect that follows
    # the form to the shop's return_url (browsers apply form-action to that redirect too).
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; "
        f"form-action 'self'{_origin(return_url)}; frame-ancestors 'none'; base-uri 'none'"
    )
    return response


def _details(challenge: Challenge) -> str:
    amount = Money(challenge.amount, challenge.currency).display()
    return (
        f"<dl><dt>Merchant</dt><dd>{html.escape(MERCHANT)}</dd>"
        f"<dt>Amount</dt><dd id=amount>{html.escape(amount)}</dd></dl>"
    )


def _not_found() -> web.Response:
    return _page(
        "Authentication not found",
        "<p>This authentication link is unknown. Return to the shop and try again.</p>",
        status=404,
    )


@routes.get(AUTH_PATH + "{token}")
async def challenge_page(request: web.Request) -> web.Response:
    challenge = await _sandbox(request).challenge(request.match_info["token"])
    if challenge is None:
        return _not_found()
    if not challenge.open:
        return _page(
            "Authentication finished",
            _details(challenge) + "<p>This payment no longer awaits authentication.</p>",
            return_url=challenge.return_url,
        )
    action = html.escape(AUTH_PATH + request.match_info["token"])
    return _page(
        "Confirm your payment",
        _details(challenge)
        + "<p class=note>Sandbox 3-D Secure: no bank is involved. Choose the outcome.</p>"
        f'<form method=post action="{action}">'
        "<button class=complete name=outcome value=complete type=submit>Complete</button>"
        "<button class=fail name=outcome value=fail type=submit>Fail</button></form>",
        return_url=challenge.return_url,
    )


@routes.post(AUTH_PATH + "{token}")
async def answer_challenge(request: web.Request) -> web.Response:
    form = await request.post()
    choice = form.get("outcome")
    if not isinstance(choice, str) or choice not in OUTCOMES:
        return _page("Bad request", "<p>Choose Complete or Fail.</p>", status=400)
    challenge = await _sandbox(request).authenticate(request.match_info["token"], OUTCOMES[choice])
    if challenge is None:
        return _not_found()
    actor = Actor(
        id="sandbox",
        role=Role.SERVICE,
        origin=request.remote or "unknown",
        request_id=request.get(REQUEST_ID),
    )
    try:  # what Stripe's webhook does; if it fails, the completer settles the payment later
        await container(request).payments.settle_action(actor, challenge.payment_id)
    except Exception:
        log.exception("sandbox: could not settle the payment after authentication")
    status = challenge.outcome or "failed"
    if challenge.return_url is None:
        return _page(
            "Authentication " + ("complete" if status == "succeeded" else "failed"),
            _details(challenge) + "<p>You can close this window.</p>",
        )
    location = _with_query(challenge.return_url, challenge.payment_id, status)
    return web.Response(status=303, headers={"Location": location})


def _with_query(url: str, payment_id: str, status: str) -> str:
    """The return_url with `payment_id` and `redirect_status` added (as Stripe adds
    `payment_intent` and `redirect_status`)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [("payment_id", payment_id), ("redirect_status", status)]
    return urlunsplit(parts._replace(query=urlencode(query)))
