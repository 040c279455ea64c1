from __future__ import annotations

import pytest

from paysvc.errors import InvalidRequest
from paysvc.web.pci import (
    card_number_spans,
    find_card_data,
    is_sensitive_field_name,
    luhn_valid,
    reject_card_data,
)

STRIPE_TEST_PANS = [
    "4242 4242 4242 4242",
    "4242424242424242",
    "4000-0566-5566-5556",
    "378282246310005",
    "6011111111111117",
    "5555 5555 5555 4444",
]


def test_luhn() -> None:
    assert luhn_valid("4242424242424242")
    assert not luhn_valid("4242424242424241")


@pytest.mark.parametrize("pan", STRIPE_TEST_PANS)
def test_pan_in_metadata_value(pan: str) -> None:
    body = {"order_id": "1042", "amount": 1999, "metadata": {"note": f"card {pan} thanks"}}
    assert find_card_data(body) == "$.metadata.note"


@pytest.mark.parametrize("pan", STRIPE_TEST_PANS)
def test_pan_in_description(pan: str) -> None:
    assert find_card_data({"description": pan}) == "$.description"


def test_pan_in_nested_lists() -> None:
    body = {"items": [{"tags": ["a", "b"]}, {"tags": ["ok", "x 378282246310005 y"]}]}
    assert find_card_data(body) == "$.items[1].tags[1]"
    assert find_card_data(["fine", ["6011111111111117"]]) == "$[1][0]"


@pytest.mark.parametrize("pan", STRIPE_TEST_PANS)
def test_pan_as_key_is_reported_without_echoing_it(pan: str) -> None:
    path = find_card_data({"metadata": {pan: "visa"}})
    assert path == '$.metadata["<redacted>"]'
    assert "4242" not in path and "0566" not in path


def test_pan_as_integer_value_and_top_level_string() -> None:
    assert find_card_data({"metadata": {"n": 4242424242424242}}) == "$.metadata.n"
    assert find_card_data("4242 4242 4242 4242") == "$"


def test_pan_followed_by_more_groups() -> None:
    assert find_card_data({"d": "4242 4242 4242 4242 12"}) == "$.d"
    assert find_card_data({"d": "ref 12 4242-4242-4242-4242"}) == "$.d"


def test_full_width_digits_count() -> None:
    full_width = "".join(chr(0xFF10 + int(c)) for c in "4242424242424242")
    assert find_card_data({"d": full_width}) == "$.d"


@pytest.mark.parametrize(
    "name",
    [
        "card_number",
        "cardNumber",
        "card-number",
        "CardNumber",
        "CARD_NUMBER",
        "card number",
        "pan",
        "PAN",
        "cvc",
        "cvv",
        "CVV2",
        "cvc2",
        "security_code",
        "securityCode",
        "number-under-card",
        "billing_card_number",
        "card_cvc",
        "cardCvc",
    ],
)
def test_sensitive_field_names(name: str) -> None:
    assert is_sensitive_field_name(name)
    assert find_card_data({"metadata": {name: "x"}}) == (
        f"$.metadata.{name}" if name.replace("_", "a").isalnum() else f'$.metadata["{name}"]'
    )


@pytest.mark.parametrize(
    "name", ["company", "japan", "span", "order_id", "card_brand", "last4", "description"]
)
def test_ordinary_field_names(name: str) -> None:
    assert not is_sensitive_field_name(name)


@pytest.mark.parametrize(
    "body",
    [
        {"order_id": "1042", "amount": 1999, "currency": "usd"},
        {"metadata": {"ref": "123456789012"}},  # 12 digits
        {"metadata": {"ref": "4242424242424241"}},  # 16 digits, not Luhn-valid
        {"metadata": {"big": "12345678901234567890123"}},  # one long unbroken number
        {"id": "pay_4xK2s9QmZr81bN0aLw7PqT3e", "r": "re_Z8vN1q2w3e4r5t6y7u8i9o0p"},
        {"created_at": "2026-11-26T10:00:00Z", "phone": "+1 415-555-2671"},
        {"amount": 99999999, "flag": True, "ratio": 0.5, "none": None},
        {"description": "order 1042 for customer 17, 3 items"},
    ],
)
def test_no_false_positives(body: object) -> None:
    assert find_card_data(body) is None


def test_first_offence_in_document_order() -> None:
    body = {"a": {"deep": "4242424242424242"}, "card_number": "x"}
    assert find_card_data(body) == "$.a.deep"


def test_odd_keys_are_quoted() -> None:
    assert find_card_data({"we ird": {'"q"': "4242424242424242"}}) == '$["we ird"]["\\"q\\""]'


def test_deep_nesting_does_not_recurse() -> None:
    body: object = "4242424242424242"
    for _ in range(5000):
        body = [body]
    path = find_card_data(body)
    assert path is not None and path.endswith("[0]")


def test_spans_for_redaction() -> None:
    text = "a 4242 4242 4242 4242 b 378282246310005"
    spans = list(card_number_spans(text))
    assert [text[s:e] for s, e in spans] == ["4242 4242 4242 4242", "378282246310005"]


def test_reject_card_data_error() -> None:
    reject_card_data({"order_id": "1042", "metadata": {"ref": "123456789012"}})
    with pytest.raises(InvalidRequest) as caught:
        reject_card_data({"metadata": {"note": "4242 4242 4242 4242"}})
    error = caught.value
    assert (error.http_status, error.code, error.param) == (422, "raw_card_data", "$.metadata.note")
    assert "4242" not in error.message
