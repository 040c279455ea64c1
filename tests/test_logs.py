from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from paysvc.logs import _RULES, configure_logging, redact, request_id_var
from paysvc.web.pci import card_number_spans

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxNyIsInJvbGUiOiJhZG1pbiJ9."
    "c2lnbmF0dXJlLWhlcmUtbm90LXJlYWxseQ"
)
SECRETS = [
    JWT,
    "sk_live_51HxYzAbCdEfGh",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "rk_live_abcdef123456",
    "alice.smith+shop@example.com",
    "4242 4242 4242 4242",
    "4000-0566-5566-5556",
    "378282246310005",
    "opaque-session-token-9f8e7d",
]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = configure_logging("DEBUG", stream=stream)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_clean(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output
    assert "4242" not in output
    assert "example.com" not in output


def test_json_lines_with_request_id(captured: io.StringIO) -> None:
    log = logging.getLogger("paysvc.test")
    log.info("plain %s", "message")
    token = request_id_var.set("req_123")
    try:
        log.warning("inside a request")
    finally:
        request_id_var.reset(token)
    first, second = lines(captured)
    assert first["message"] == "plain message"
    assert first["level"] == "info" and first["logger"] == "paysvc.test"
    assert str(first["time"]).endswith("Z")
    assert "request_id" not in first
    assert second["request_id"] == "req_123"


def test_secrets_in_message_and_args_are_masked(captured: io.StringIO) -> None:
    log = logging.getLogger("paysvc.test")
    log.info("Authorization: Bearer opaque-session-token-9f8e7d")
    log.info("token %s for %s", JWT, "alice.smith+shop@example.com")
    log.info("keys %s %s %s", "sk_live_51HxYzAbCdEfGh", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1)
    log.info("restricted rk_live_abcdef123456 and sk_test_4eC39HqLyjWDarjtT1zdp7dc")
    log.info("card %s and %s and %s", "4242 4242 4242 4242", "4000-0566-5566-5556", 378282246310005)
    log.info("headers %s", {"Authorization": "Bearer opaque-session-token-9f8e7d"})
    output = captured.getvalue()
    assert_clean(output)
    assert len(lines(captured)) == 6
    assert "[CARD]" in output and "[EMAIL]" in output and "[REDACTED]" in output


def test_exception_text_and_extras_are_masked(captured: io.StringIO) -> None:
    log = logging.getLogger("paysvc.test")
    try:
        raise ValueError(f"bad token {JWT} for alice.smith+shop@example.com card 4242424242424242")
    except ValueError:
        log.exception("failed with sk_test_4eC39HqLyjWDarjtT1zdp7dc")
    log.info("with extras", extra={"payment_id": "pay_1", "header": f"Bearer {JWT}"})
    output = captured.getvalue()
    assert_clean(output)
    failed, extras = lines(captured)
    assert "ValueError" in str(failed["exc"])
    assert extras["payment_id"] == "pay_1"


def test_a_card_number_logged_as_a_number_is_masked(captured: io.StringIO) -> None:
    logging.getLogger("paysvc.test").info(
        "numbers", extra={"pan": 4242424242424242, "status": 200, "amount": 999999999999}
    )
    (entry,) = lines(captured)
    assert (entry["pan"], entry["status"], entry["amount"]) == ("[CARD]", 200, 999999999999)


def test_redaction_with_pytest_capture_active(
    captured: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("paysvc.test").info("email %s", "alice.smith+shop@example.com")
    assert "alice" not in captured.getvalue()


def test_ordinary_text_is_left_alone() -> None:
    text = "payment pay_4xK2s9QmZr81bN0aLw7PqT3e order 1042 amount 1999 usd at 2026-11-26T10:00:00Z"
    assert redact(text) == text


def test_configure_twice_keeps_one_handler() -> None:
    first = configure_logging("INFO", stream=io.StringIO())
    second = configure_logging("INFO", stream=io.StringIO())
    try:
        assert first not in logging.getLogger().handlers
        assert second in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(second)


def _every_rule(text: str) -> str:
    """`redact` without its quick check: every rule, then every card span."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    for start, end in reversed(list(card_number_spans(text))):
        text = text[:start] + "[CARD]" + text[end:]
    return text


@pytest.mark.parametrize(
    "text",
    [
        "PROXY-AUTHORIZATION: Digest abc",
        "authorization=xyz",
        "sent BEARER abc.def",
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
        "key sk_live_51abc",
        "key rk_test_9x",
        "key whsec_abc",
        "Passwd: hunter2",
        "CLIENT_SECRET=s",
        "Api-Key: k",
        "ACCESS_TOKEN=t",
        "refreshtoken=r",
        "mail A.B+c@Example.co.uk now",
        "card 4242 4242 4242 4242 here",
        "card 4242-4242-4242-4242 and 5555\u00a05555\u00a05555\u00a04444",
        "arabic-indic digits " + "\u0664\u0662" * 8,
        "GET /payments/{id} 200",
        "order 1042 amount 1999 at 2026-11-26T10:00:00Z",
        "twelve digits 1234 5678 9012 only",
    ],
)
def test_quick_checks_never_skip_what_a_rule_masks(text: str) -> None:
    assert redact(text) == _every_rule(text)
