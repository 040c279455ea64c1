"""Security headers on every response (an `on_response_prepare` signal, so responses made by
aiohttp itself, static files and errors get them too).

- no `Server: Python/x aiohttp/y` banner (aiohttp only sets it when the header is absent);
- `Cache-Control: no-store` on everything but Swagger UI's static assets (API answers carry
  payment data and must not sit in shared or browser caches);
- `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`;
- a Content-Security-Policy: `default-src 'none'` for API answers (JSON is never a document);
  for the Swagger UI page (`/docs`), same-origin scripts, styles and images, plus the page's one
  inline script allowed by its SHA-256 hash (computed from the page itself, so it follows the
  template). Inline styles are allowed on that page only: Swagger UI sets them.
"""

from __future__ import annotations

import base64
import hashlib
import re

from aiohttp import web

SERVER = "paysvc"
STATIC_PREFIX = "/static/swagger"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
_FIXED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def docs_csp(page: bytes) -> str:
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'none'"
    )


async def harden(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers["Server"] = SERVER
    headers.update(_FIXED)
    if request.path.startswith(STATIC_PREFIX):
        headers["Content-Security-Policy"] = "default-src 'none'"
        return
    headers["Cache-Control"] = "no-store"
    if "Content-Security-Policy" in headers:
        return  # a page that brings its own policy (the sandbox's 3-D Secure page)
    body = response.body if isinstance(response, web.Response) else None
    if response.content_type == "text/html" and isinstance(body, bytes):
        headers["Content-Security-Policy"] = docs_csp(body)
    else:
        headers["Content-Security-Policy"] = API_CSP
