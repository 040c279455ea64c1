"""PCI guard: find raw card data (PANs, security codes) anywhere in a parsed JSON body.

Pure functions, no I/O: the HTTP middleware calls `find_card_data(body)` in strict mode and
rejects the request with 422 `raw_card_data` before anything is stored or logged; the logging
redactor reuses `card_number_spans` to mask card numbers in log text.

What counts as a card number: a run of 13-19 digits, possibly grouped by single spaces or
dashes ("4242 4242 4242 4242", "4000-0566-5566-5556"), that passes the Luhn check. A longer
grouped run is also checked group-aligned ("4242 4242 4242 4242 12" still holds a PAN). An
unbroken run longer than 19 digits is an ordinary big number, not a card. Unicode decimal digits
(e.g. full-width) count as digits, so they cannot be used to slip a PAN through.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from paysvc.errors import InvalidRequest

MIN_PAN_DIGITS = 13
MAX_PAN_DIGITS = 19

# Maximal runs of digits where consecutive digits may be separated by one space or one dash.
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")
_GROUP_SEPARATOR = re.compile(r"[ -]")
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_NAME_SEPARATORS = re.compile(r"[^a-z0-9]+")

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


def _is_pan(digits: str) -> bool:
    return MIN_PAN_DIGITS <= len(digits) <= MAX_PAN_DIGITS and luhn_valid(digits)


def card_number_spans(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every card-number-like span in `text`, left to right."""
    for match in _DIGIT_RUN.finditer(text):
        run = match.group()
        digits = _GROUP_SEPARATOR.sub("", run)
        if len(digits) < MIN_PAN_DIGITS:
            continue
        if _is_pan(digits):
            yield match.span()
            continue
        # A grouped run can hold a PAN followed or preceded by other groups: try group-aligned
        # windows. An unbroken run (one group) longer than 19 digits is just a big number.
        groups = [(m.start(), m.end()) for m in re.finditer(r"\d+", run)]
        if len(groups) < 2:
            continue
        found = _first_group_window(run, groups)
        if found is not None:
            yield match.start() + found[0], match.start() + found[1]


def _first_group_window(run: str, groups: list[tuple[int, int]]) -> tuple[int, int] | None:
    for first in range(len(groups)):
        digits = ""
        for last in range(first, len(groups)):
            digits += run[groups[last][0] : groups[last][1]]
            if len(digits) > MAX_PAN_DIGITS:
                break
            if _is_pan(digits):
                return groups[first][0], groups[last][1]
    return None


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


def _scalar_has_card(value: object) -> bool:
    if isinstance(value, str):
        return contains_card_number(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return contains_card_number(str(value))
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

    Checks every string (and integer) value and every object key, at any depth, in document
    order (a key is checked just before its value). A key that itself contains a card number is
    reported as `["<redacted>"]` so the path (returned to the client, maybe logged) never echoes
    the number. Iterative, so a deeply nested body cannot exhaust the Python stack.
    """
    if _scalar_has_card(body):
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


def reject_card_data(body: object) -> None:
    """Strict PCI mode: raise 422 `raw_card_data` naming the offending path (never the value)."""
    path = find_card_data(body)
    if path is not None:
        raise InvalidRequest(
            "Raw card data is not accepted: send a payment method token (e.g. pm_card_visa)",
            code="raw_card_data",
            param=path,
        )
