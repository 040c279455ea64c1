"""PCI guard: find raw card data (PANs, security codes) anywhere in a request.

Pure functions, no I/O: the HTTP middleware calls `find_card_data(body)` (and
`contains_card_number` on the path, query string and the `Idempotency-Key` and `X-Request-Id`
headers) in strict mode and rejects the request with 422 `raw_card_data` before anything is
stored or logged; the logging redactor reuses `card_number_spans` to mask card numbers in log
text, and the request-id middleware never adopts a client id that holds one.

What counts as a card number: a run of 13-19 digits that passes the Luhn check **and** whose
length and leading digits match a card brand's issuer range (`BRANDS`: Visa, Mastercard incl.
the 2-series, American Express, Discover, JCB, Diners Club, UnionPay, Maestro), so a
millisecond timestamp (`1796290000001`) or a phone number is not one. Digits may be separated
by up to three separator characters: any Unicode space (no-break, thin, ideographic...),
zero-width spaces and joiners, soft hyphens, dots and dashes ("4242 4242 4242 4242",
"4000-0566-5566-5556", "4242.4242.4242.4242", "4242\u00a04242..."). A longer separated run is
also checked group-aligned ("4242 4242 4242 4242 12" still holds a PAN). An unbroken run longer
than 19 digits is an ordinary big number, not a card. Unicode decimal digits (e.g. full-width)
count as digits, so they cannot be used to slip a PAN through.

In a JSON body, numbers are scanned as written (`4.242424242424242e15` included: the guard
parses them as `JsonNumber` text), and the scalar items of an array are also scanned joined,
so a PAN split across adjacent items (`["4242", "4242", "4242", "4242"]`) is found.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator

from paysvc.errors import InvalidRequest

MIN_PAN_DIGITS = 13
MAX_PAN_DIGITS = 19

# Between two digits of one run: up to three of these (spaces of any kind incl. no-break and
# zero-width, soft hyphen, dots, dashes incl. the Unicode dashes and minus).
_SEPARATOR = (
    r"[\s\u00ad\u180e\u200b-\u200d\u2060\ufeff"  # spaces, soft hyphen, zero-width
    r".\u2024\uff0e"  # dots
    r"\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d]"  # dashes and minus signs
)
_DIGIT_RUN = re.compile(r"\d(?:" + _SEPARATOR + r"{0,3}\d)*")
_DIGIT_GROUP = re.compile(r"\d+")
# A text with fewer digits than the shortest card number holds none (most text scanned).
_ENOUGH_DIGITS = re.compile(rf"(?:\d\D*){{{MIN_PAN_DIGITS}}}")
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_NAME_SEPARATORS = re.compile(r"[^a-z0-9]+")


def _ranges(*spec: str) -> tuple[tuple[str, str], ...]:
    """Issuer ranges as (low, high) prefixes of equal length: "4", "51-55", "2221-2720"."""
    return tuple((low, high or low) for low, _, high in (part.partition("-") for part in spec))


# brand -> (issuer ranges, accepted lengths). Visa's 13-digit numbers are no longer issued and
# are left out: too many 13-digit phone numbers (+49 151 ..., E.164) start with a 4.
BRANDS: dict[str, tuple[tuple[tuple[str, str], ...], frozenset[int]]] = {
    "visa": (_ranges("4"), frozenset({16, 19})),
    "mastercard": (_ranges("51-55", "2221-2720"), frozenset({16})),
    "amex": (_ranges("34", "37"), frozenset({15})),
    "discover": (_ranges("6011", "644-649", "65", "622126-622925"), frozenset(range(16, 20))),
    "jcb": (_ranges("3528-3589"), frozenset(range(16, 20))),
    "diners": (_ranges("300-305", "3095", "36", "38-39"), frozenset(range(14, 20))),
    "unionpay": (_ranges("62", "81"), frozenset(range(16, 20))),
    # Maestro's well-known BINs from 13 digits; its wider ranges (50, 56-69) only from 16,
    # longer than any phone number (E.164: at most 15 digits).
    "maestro": (
        _ranges("5018", "5020", "5038", "5893", "6304", "6759", "6761-6763"),
        frozenset(range(13, 20)),
    ),
    "maestro-wide": (_ranges("50", "56-69"), frozenset(range(16, 20))),
}

# Field names (normalised: lower case, separators removed) that only carry card data.
_SENSITIVE_NAMES = frozenset(
    {
        "cardnumber",
        "cardnum",
        "cardno",
        "ccnumber",
        "ccnum",
        "creditcardnumber",
        "debitcardnumber",
        "primaryaccountnumber",
        "pan",
        "cvc",
        "cvc2",
        "cvv",
        "cvv2",
        "cvn",
        "csc",
        "securitycode",
        "cardsecuritycode",
        "cardverificationcode",
        "cardverificationvalue",
        "numberundercard",
        "cardcode",
    }
)
# Words that mark a field as card data wherever they appear as a word of the name
# ("card_cvc", "billingPan", "cvv2Code"); matched as whole words so "company" or "japan" pass.
_SENSITIVE_WORDS = frozenset({"pan", "cvc", "cvc2", "cvv", "cvv2", "cvn", "csc"})
# Phrases that mark a field as card data wherever they appear in the squashed name
# ("billing_card_number", "payment-security-code").
_SENSITIVE_PHRASES = ("cardnumber", "securitycode", "primaryaccountnumber", "numberundercard")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of decimal digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The brand whose issuer range and length `digits` (ASCII) match, else None."""
    for brand, (ranges, lengths) in BRANDS.items():
        if len(digits) in lengths and any(
            low <= digits[: len(low)] <= high for low, high in ranges
        ):
            return brand.removesuffix("-wide")
    return None


def is_card_number(digits: str) -> bool:
    """A brand's issuer range and length, and Luhn-valid (`digits`: decimal digits only)."""
    if not digits.isascii():
        digits = "".join(str(unicodedata.digit(char)) for char in digits)
    return card_brand(digits) is not None and luhn_valid(digits)


def card_number_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every card-number span in `text`, left to right."""
    if _ENOUGH_DIGITS.search(text) is None:
        return
    for match in _DIGIT_RUN.finditer(text):
        if match.end() - match.start() < MIN_PAN_DIGITS:  # too few digits to be one
            continue
        found = next(_card_windows(match.group()), None)
        if found is not None:
            yield match.start() + found[0], match.start() + found[1]


def _card_windows(run: str) -> Iterator[tuple[int, int]]:
    """(start, end) in `run` of each window of whole consecutive digit groups that forms a card
    number (a separated run can hold a PAN preceded or followed by other groups). One unbroken
    group longer than a PAN is just a big number."""
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUP.finditer(run)]
    if len(groups) == 1 and len(run) > MAX_PAN_DIGITS:
        return
    for first in range(len(groups)):
        digits = ""
        for last in range(first, len(groups)):
            digits += run[groups[last][0] : groups[last][1]]
            if len(digits) > MAX_PAN_DIGITS:
                break
            if len(digits) >= MIN_PAN_DIGITS and is_card_number(digits):
                yield groups[first][0], groups[last][1]


def contains_card_number(text: str) -> bool:
    return next(card_number_spans(text), None) is not None


def is_sensitive_field_name(name: str) -> bool:
    """True for names like card_number, cardNumber, card-number, PAN, cvc, CVV2, security_code."""
    spaced = _CAMEL_BOUNDARY.sub(r"\1 \2", name).lower()
    words = [word for word in _NAME_SEPARATORS.split(spaced) if word]
    squashed = "".join(words)
    if squashed in _SENSITIVE_NAMES:
        return True
    if any(word in _SENSITIVE_WORDS for word in words):
        return True
    return any(phrase in squashed for phrase in _SENSITIVE_PHRASES)


class JsonNumber(str):
    """A JSON number kept as written (`json.loads(..., parse_int=JsonNumber,
    parse_float=JsonNumber)`), so `4.242424242424242e15` is scanned digit for digit."""

    __slots__ = ()


def _scalar_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return None


def _scalar_has_card(value: object) -> bool:
    text = _scalar_text(value)
    return text is not None and contains_card_number(text)


def _split_across_items(items: list[object] | tuple[object, ...]) -> bool:
    """A card number split over adjacent scalar items (`["4242", "4242", "4242", "4242"]`,
    `["card 4242 4242", 4242, "4242"]`): their texts joined by a space hold a card number that
    begins at the first digit of one item and ends at the last digit of a later one. Only
    fragments take part: an item with a PAN's worth of digits or more (a timestamp, a big id) is
    scanned on its own and separates its neighbours, and windows cutting through an item do not
    count (two phone numbers side by side are no card)."""
    joined = ""
    starts: dict[int, int] = {}  # offset of an item's first digit -> item index
    ends: dict[int, int] = {}  # offset just after an item's last digit -> item index
    for index, item in enumerate((*items, None)):
        text = _scalar_text(item)
        digits = [] if text is None else [m.span() for m in _DIGIT_GROUP.finditer(text)]
        if text is None or sum(end - start for start, end in digits) >= MIN_PAN_DIGITS:
            if len(starts) > 1 and _spans_items(joined, starts, ends):
                return True
            joined, starts, ends = "", {}, {}
            continue
        if digits:
            starts[len(joined) + digits[0][0]] = index
            ends[len(joined) + digits[-1][1]] = index
        joined += text + " "
    return False


def _spans_items(joined: str, starts: dict[int, int], ends: dict[int, int]) -> bool:
    for match in _DIGIT_RUN.finditer(joined):
        for start, end in _card_windows(match.group()):
            first, last = starts.get(match.start() + start), ends.get(match.start() + end)
            if first is not None and last is not None and last > first:
                return True
    return False


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REDACTED_KEY = '["<redacted>"]'


def _child_path(path: str, key: str) -> str:
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'{path}["{escaped}"]'


def find_card_data(body: object) -> str | None:
    """The JSON path (`$.metadata.note`, `$.items[2]`) of the first value that holds card data.

    Checks every string and number value and every object key, at any depth, in document
    order (a key is checked just before its value), and each array's scalar items joined. A key
    that itself contains a card number is reported as `["<redacted>"]` so the path (returned to
    the client, maybe logged) never echoes the number. Iterative, so a deeply nested body
    cannot exhaust the Python stack.
    """
    if _scalar_has_card(body):
        return "$"
    if isinstance(body, list | tuple) and _split_across_items(body):
        return "$"
    stack: list[tuple[str, Iterator[tuple[bool, str, object]]]] = [("$", _children(body))]
    while stack:
        path, children = stack[-1]
        step = next(children, None)
        if step is None:
            stack.pop()
            continue
        is_key, key, value = step
        if not is_key:
            child_path = f"{path}[{key}]"
        else:
            if contains_card_number(key):
                return path + REDACTED_KEY
            child_path = _child_path(path, key)
            if is_sensitive_field_name(key):
                return child_path
        if isinstance(value, list | tuple) and _split_across_items(value):
            return child_path
        if isinstance(value, dict | list | tuple):
            stack.append((child_path, _children(value)))
        elif _scalar_has_card(value):
            return child_path
    return None


def _children(value: object) -> Iterator[tuple[bool, str, object]]:
    """(is_object_key, key or list index, child) of a container, in document order."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield True, str(key), child
    elif isinstance(value, list | tuple):
        for index, child in enumerate(value):
            yield False, str(index), child


def scan_json(raw: bytes) -> str | None:
    """`find_card_data` over a request body as the client wrote it: JSON numbers kept as their
    text; a body that is not JSON is scanned as text (reported as `$`)."""
    try:
        body: object = json.loads(raw, parse_int=JsonNumber, parse_float=JsonNumber)
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = raw.decode("utf-8", errors="replace")
    return find_card_data(body)


def reject_card_data(body: object) -> None:
    """Strict PCI mode: raise 422 `raw_card_data` naming the offending path (never the value).
    `body`: parsed JSON, or the raw bytes of a request body (see `scan_json`)."""
    path = scan_json(body) if isinstance(body, bytes) else find_card_data(body)
    if path is not None:
        raise InvalidRequest(
            "Raw card data is not accepted: send a payment method token (e.g. pm_card_visa)",
            code="raw_card_data",
            param=path,
        )
