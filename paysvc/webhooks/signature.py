"""Stripe webhook signatures: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`.

`v1` is HMAC-SHA256, keyed with the endpoint secret, of `"{t}.{raw body}"`. Several secrets
may be configured (rotation) and Stripe may send several `v1` entries; any match passes.
Comparisons are constant-time; stale and far-future timestamps are rejected.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


class InvalidSignature(Exception):
    """The payload is not proven to come from Stripe; `reason` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _mac(payload: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign_stripe_payload(payload: bytes, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header Stripe would send for `payload` at `timestamp`."""
    return f"t={timestamp},v1={_mac(payload, secret, timestamp)}"


def verify_stripe_signature(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    now: float,
    tolerance: int = 300,
) -> None:
    """Raise InvalidSignature unless `header` proves `payload` was signed with one of
    `secrets` within `tolerance` seconds of `now`."""
    if not secrets:
        raise InvalidSignature("no webhook secret configured")
    if not header:
        raise InvalidSignature("missing Stripe-Signature header")
    timestamps: list[str] = []
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value.strip())
        elif key == "v1":
            signatures.append(value.strip())
    if len(timestamps) != 1 or not timestamps[0].isdigit() or len(timestamps[0]) > 12:
        raise InvalidSignature("malformed timestamp in Stripe-Signature header")
    if not signatures:
        raise InvalidSignature("no v1 signature in Stripe-Signature header")
    timestamp = int(timestamps[0])
    if now - timestamp > tolerance:
        raise InvalidSignature("timestamp outside the tolerance (stale)")
    if timestamp - now > tolerance:
        raise InvalidSignature("timestamp outside the tolerance (in the future)")
    expected = [_mac(payload, secret, timestamp) for secret in secrets]
    matched = False
    for signature in signatures:
        for candidate in expected:
            # Evaluate every pair so the time taken does not depend on which one matched.
            matched |= hmac.compare_digest(signature.encode(), candidate.encode())
    if not matched:
        raise InvalidSignature("no signature matches a configured secret")
