"""Stripe webhook signatures, verified by hand (no `stripe` import outside the gateway).

`Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...][,v0=...]`: each `v1` is the hex
HMAC-SHA256, keyed with an endpoint secret, of `"{t}." + raw body`. Stripe sends several `v1`
while an endpoint secret is being rolled; we accept several secrets for the same reason.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from paysvc.errors import PaysvcError

DEFAULT_TOLERANCE = 300  # seconds, as Stripe's own libraries


class InvalidSignature(PaysvcError):
    """The webhook is not provably from Stripe: 400, and nothing changes."""

    type = "invalid_request_error"
    code = "invalid_signature"
    http_status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(f"Invalid Stripe-Signature: {reason}")
        self.reason = reason


def verify_stripe_signature(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Return when one `v1` signature matches one secret and `t` is within `tolerance` of `now`
    (either way: a timestamp from the future is as suspect as a stale one); else raise."""
    if not header:
        raise InvalidSignature("missing header")
    timestamp, signatures = _parse(header)
    if abs(now - timestamp) > tolerance:
        raise InvalidSignature("timestamp outside the tolerance")
    usable = [secret for secret in secrets if secret]
    if not usable:
        raise InvalidSignature("no webhook secret configured")
    expected = [_sign(payload, secret, timestamp) for secret in usable]
    # Compare every pair in constant time, without stopping at the first match.
    matches = [hmac.compare_digest(e.encode(), s) for e in expected for s in signatures]
    if not any(matches):
        raise InvalidSignature("no signature matches")


def sign_stripe_payload(payload: bytes, secret: str, timestamp: int) -> str:
    """A `Stripe-Signature` header value for `payload`, as Stripe would send it."""
    return f"t={timestamp},v1={_sign(payload, secret, timestamp)}"


def _sign(payload: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _parse(header: str) -> tuple[int, list[bytes]]:
    timestamps: list[str] = []
    signatures: list[bytes] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value)
        elif key == "v1" and value:
            signatures.append(value.encode("utf-8", "replace"))
    if (
        len(timestamps) != 1
        or not (timestamps[0].isascii() and timestamps[0].isdigit())
        or len(timestamps[0]) > 12
    ):
        raise InvalidSignature("malformed header")
    if not signatures:
        raise InvalidSignature("no v1 signature")
    return int(timestamps[0]), signatures
