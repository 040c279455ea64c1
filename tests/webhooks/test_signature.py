"""Stripe webhook signatures, checked by hand and against the stripe SDK's own verifier."""

from __future__ import annotations

import pytest
import stripe

from paysvc.webhooks.signature import (
    InvalidSignature,
    sign_stripe_payload,
    verify_stripe_signature,
)

SECRET = "whsec_current"
OLD_SECRET = "whsec_previous"
NOW = 1_790_000_000
BODY = b'{"id": "evt_1", "type": "payment_intent.succeeded"}'


def reason_of(payload: bytes, header: str | None, secrets: list[str], now: float = NOW) -> str:
    with pytest.raises(InvalidSignature) as caught:
        verify_stripe_signature(payload, header, secrets, now)
    assert caught.value.http_status == 400
    return caught.value.reason


def test_valid_signature() -> None:
    verify_stripe_signature(BODY, sign_stripe_payload(BODY, SECRET, NOW), [SECRET], NOW)


def test_our_header_is_what_stripe_itself_accepts() -> None:
    header = sign_stripe_payload(BODY, SECRET, NOW)
    stripe.WebhookSignature.verify_header(BODY.decode(), header, SECRET, tolerance=None)


def test_stripe_style_header_with_several_v1_and_a_v0() -> None:
    good = sign_stripe_payload(BODY, SECRET, NOW).split("v1=")[1]
    header = f"t={NOW},v1={'0' * 64},v1={good},v0=deadbeef"
    verify_stripe_signature(BODY, header, [SECRET], NOW)


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(header: str | None) -> None:
    assert reason_of(BODY, header, [SECRET]) == "missing header"


@pytest.mark.parametrize(
    "header",
    ["garbage", f"v1={'a' * 64}", "t=abc,v1=aa", "t=1,t=2,v1=aa", "t=²,v1=aa"],
)
def test_malformed_header(header: str) -> None:
    assert reason_of(BODY, header, [SECRET]) == "malformed header"


def test_header_without_v1() -> None:
    assert reason_of(BODY, f"t={NOW},v0=abc", [SECRET]) == "no v1 signature"


def test_wrong_secret() -> None:
    header = sign_stripe_payload(BODY, "whsec_attacker", NOW)
    assert reason_of(BODY, header, [SECRET]) == "no signature matches"


def test_tampered_body() -> None:
    header = sign_stripe_payload(BODY, SECRET, NOW)
    tampered = BODY.replace(b"succeeded", b"canceled")
    assert reason_of(tampered, header, [SECRET]) == "no signature matches"


def test_signature_is_bound_to_its_timestamp() -> None:
    signature = sign_stripe_payload(BODY, SECRET, NOW).split(",")[1]
    assert reason_of(BODY, f"t={NOW + 1},{signature}", [SECRET]) == "no signature matches"


def test_non_ascii_signature_is_just_a_mismatch() -> None:
    assert reason_of(BODY, f"t={NOW},v1=é{'a' * 63}", [SECRET]) == "no signature matches"


def test_stale_timestamp() -> None:
    header = sign_stripe_payload(BODY, SECRET, NOW - 301)
    assert reason_of(BODY, header, [SECRET]) == "timestamp outside the tolerance"
    verify_stripe_signature(BODY, sign_stripe_payload(BODY, SECRET, NOW - 300), [SECRET], NOW)


def test_timestamp_from_the_future() -> None:
    header = sign_stripe_payload(BODY, SECRET, NOW + 301)
    assert reason_of(BODY, header, [SECRET]) == "timestamp outside the tolerance"


def test_custom_tolerance() -> None:
    header = sign_stripe_payload(BODY, SECRET, NOW - 20)
    with pytest.raises(InvalidSignature):
        verify_stripe_signature(BODY, header, [SECRET], NOW, tolerance=10)


def test_rotation_either_secret_works() -> None:
    old = sign_stripe_payload(BODY, OLD_SECRET, NOW)
    new = sign_stripe_payload(BODY, SECRET, NOW)
    verify_stripe_signature(BODY, old, [SECRET, OLD_SECRET], NOW)
    verify_stripe_signature(BODY, new, [SECRET, OLD_SECRET], NOW)
    assert reason_of(BODY, old, [SECRET]) == "no signature matches"


def test_no_secret_configured_rejects() -> None:
    header = sign_stripe_payload(BODY, "", NOW)
    assert reason_of(BODY, header, []) == "no webhook secret configured"
    assert reason_of(BODY, header, [""]) == "no webhook secret configured"


def test_error_message_leaks_no_secret() -> None:
    with pytest.raises(InvalidSignature) as caught:
        verify_stripe_signature(BODY, sign_stripe_payload(BODY, "x", NOW), [SECRET], NOW)
    assert SECRET not in str(caught.value)
