"""Card detection: Luhn AND a brand's issuer range and length, whatever the separators; no
false alarm on timestamp-like ids."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from paysvc.web.pci import card_brand, contains_card_number, find_card_data, scan_json

# Published test card numbers (Stripe, Adyen, Braintree, PayPal test docs), per brand.
TEST_PANS = {
    "visa": ["4242424242424242", "4000056655665556", "4012888888881881", "4917610000000000003"],
    "mastercard": ["5555555555554444", "5200828282828210", "5105105105105100"],
    "mastercard-2series": ["2223003122003222", "2223000048400011", "2720992720992729"],
    "amex": ["378282246310005", "371449635398431", "378734493671000"],
    "discover": ["6011111111111117", "6011000990139424", "6445644564456445", "6510000000001248"],
    "jcb": ["3566002020360505", "3530111333300000", "3566111111111113"],
    "diners": ["3056930009020004", "36227206271667", "30569309025904", "38520000023237"],
    "unionpay": ["6200000000000005", "6205500000000000004", "6243030000000001"],
    "maestro": ["6759649826438453", "6799990100000000019", "5000550000000029", "6304000000000000"],
}
ALL_PANS = [(brand, pan) for brand, pans in TEST_PANS.items() for pan in pans]
SEPARATORS = {
    "space": " ",
    "double space": "  ",
    "no-break space": "\u00a0",
    "narrow no-break space": "\u202f",
    "thin space": "\u2009",
    "ideographic space": "\u3000",
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "word joiner": "\u2060",
    "dot": ".",
    "dash": "-",
    "en dash": "\u2013",
    "spaced dash": " - ",
    "soft hyphen": "\u00ad",
}


def grouped(pan: str, separator: str) -> str:
    return separator.join(pan[i : i + 4] for i in range(0, len(pan), 4))


@pytest.mark.parametrize(("brand", "pan"), ALL_PANS)
def test_published_test_pans_are_cards_of_their_brand(brand: str, pan: str) -> None:
    assert card_brand(pan) == brand.removesuffix("-2series")
    assert find_card_data({"order_id": pan}) == "$.order_id"
    assert find_card_data({"note": f"paid with {grouped(pan, ' ')} thanks"}) == "$.note"


@pytest.mark.parametrize("separator", SEPARATORS.values(), ids=SEPARATORS.keys())
@pytest.mark.parametrize(("brand", "pan"), ALL_PANS[::3])
def test_every_separator(brand: str, pan: str, separator: str) -> None:
    assert find_card_data({"order_id": grouped(pan, separator)}) == "$.order_id"
    spaced_out = separator.join(pan)  # a separator between every digit
    assert find_card_data({"order_id": spaced_out}) == "$.order_id"


def test_json_numbers_as_written() -> None:
    for number in ("4242424242424242", "4242424242424242.0", "4.242424242424242e15"):
        assert scan_json(f'{{"amount": {number}}}'.encode()) == "$.amount"
    assert scan_json(b'{"amount": 1999, "n": 1796290000001}') is None


@pytest.mark.parametrize(
    "items",
    [
        ["4242", "4242", "4242", "4242"],
        [4242, 4242, 4242, 4242],
        ["4242 4242", "4242 4242"],
        ["card: 3782", "822463", "10005"],
        ["5555\u00a05555", "5555\u00a04444", "exp 12/30"],
    ],
)
def test_a_pan_split_across_array_items(items: list[object]) -> None:
    assert find_card_data({"x": {"lines": items}}) == "$.x.lines"
    assert scan_json(json.dumps(items).encode()) == "$"


def test_array_items_that_only_sit_side_by_side_pass() -> None:
    phones = ["555-123-4567", "555-987-6543", "(555) 222-3333"]
    assert find_card_data({"phones": phones, "qty": [1, 2, 3, 4, 5]}) is None
    assert find_card_data({"ids": ["1796290000001", "1796290000002"]}) is None


def timestamp_like_ids() -> list[str]:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ids = []
    for n in range(0, 200_000, 7):
        when = start + dt.timedelta(seconds=n * 157, microseconds=n * 7919 % 1_000_000)
        millis = int(when.timestamp() * 1000)
        ids += [
            f"web-{millis}",
            str(millis),
            str(int(when.timestamp() * 1_000_000)),
            str(int(when.timestamp() * 1_000_000_000)),
            when.isoformat(),
            when.strftime("%Y%m%d%H%M%S%f"),
            when.strftime("%Y-%m-%d %H:%M:%S.%f"),
            when.strftime("%d.%m.%Y %H:%M"),
            f"ORD-{when:%Y-%m-%d}-{n:06d}",
        ]
    return ids


def test_timestamp_like_ids_are_not_cards() -> None:
    ids = timestamp_like_ids()
    assert len(ids) > 200_000
    flagged = [value for value in ids if contains_card_number(value)]
    assert flagged == []
    # The example: Luhn-valid, but no brand starts with 1.
    assert find_card_data({"order_id": "web-1796290000001"}) is None


def test_uuids_and_phone_numbers_are_not_cards() -> None:
    values = [
        str(uuid.UUID(int=n * 0x9E3779B97F4A7C15F39CC0605CEDC835 % 2**128)) for n in range(5000)
    ]
    values += ["+49 151 23456789", "+4915123456789", "+62 812 3456 7890", "+1 (555) 123-4567"]
    values += ["+44 20 7946 0958", "+33 6 12 34 56 78", "+55 11 91234-5678", "555.123.4567"]
    assert [v for v in values if contains_card_number(v)] == []
