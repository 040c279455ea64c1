"""Stripe-Signature verification (pure)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from paysvc.webhooks.signature import (
    InvalidSignature,
    sign_stripe_payload,
    verify_stripe_signature,
)

BODY = b'{"id":"evt_1","type":"payment_intent.succeeded"}'
NOW = 1_800_000_000


def test_signature_is_stripes_scheme() -> None:
    expected = hmac.new(b"whsec_x", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_stripe_payload(BODY, "whsec_x", NOW) == f"t={NOW},v1={expected}"


def test_valid_with_any_configured_secret_and_any_v1() -> None:
    header = sign_stripe_payload(BODY, "whsec_new", NOW)
    verify_stripe_signature(BODY, header, ["whsec_old", "whsec_new"], now=NOW)
    old = sign_stripe_payload(BODY, "whsec_old", NOW).split(",")[1]
    # Stripe sends one v1 per active secret while a secret is being rolled.
    verify_stripe_signature(BODY, f"{header},{old},v0=zzz", ["whsec_old"], now=NOW + 299)


@pytest.mark.parametrize(
    ("header", "secrets", "body", "now", "reason"),
    [
        (None, ["s"], BODY, NOW, "missing"),
        ("", ["s"], BODY, NOW, "missing"),
        (sign_stripe_payload(BODY, "s", NOW), [], BODY, NOW, "no webhook secret"),
        (sign_stripe_payload(BODY, "wrong", NOW), ["s"], BODY, NOW, "no signature matches"),
        (sign_stripe_payload(BODY, "s", NOW), ["s"], BODY + b" ", NOW, "no signature matches"),
        (sign_stripe_payload(BODY, "s", NOW), ["s"], BODY, NOW + 301, "stale"),
        (sign_stripe_payload(BODY, "s", NOW), ["s"], BODY, NOW - 301, "future"),
        ("v1=abc", ["s"], BODY, NOW, "timestamp"),
        (f"t={NOW},t={NOW},v1=abc", ["s"], BODY, NOW, "timestamp"),
        (f"t=-{NOW},v1=abc", ["s"], BODY, NOW, "timestamp"),
        (f"t={NOW}", ["s"], BODY, NOW, "no v1"),
        ("garbage", ["s"], BODY, NOW, "timestamp"),
    ],
)
def test_rejections(
    header: str | None, secrets: list[str], body: bytes, now: int, reason: str
) -> None:
    with pytest.raises(InvalidSignature) as caught:
        verify_stripe_signature(body, header, secrets, now=now)
    assert reason in caught.value.reason
