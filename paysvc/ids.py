"""Opaque, prefixed, random identifiers (never sequential)."""

from __future__ import annotations

import re
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_PLAUSIBLE = re.compile(r"[A-Za-z0-9_]{1,64}")
PREFIXES = frozenset({"pay", "re", "dp", "evt", "aud", "pev", "idk", "op"})


def new_id(prefix: str) -> str:
    """`pay_` + 24 random base62 characters (~143 bits).

    One read of 192 random bits, written in base 62 (24 digits take ~142.9 bits; the bias of
    reducing 192 bits is below 2^-49): one system call instead of 24 `secrets.choice`."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    number = int.from_bytes(secrets.token_bytes(24))
    digits = []
    for _ in range(24):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return prefix + "_" + "".join(digits)


def plausible(value: str) -> bool:
    """Could this be one of our ids? (Others cannot be looked up: NUL breaks PostgreSQL.)"""
    return _PLAUSIBLE.fullmatch(value) is not None
