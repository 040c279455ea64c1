"""Opaque, prefixed, random identifiers (never sequential)."""

from __future__ import annotations

import re
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
_PLAUSIBLE = re.compile(r"[A-Za-z0-9_]{1,64}")
PREFIXES = frozenset({"pay", "re", "dp", "evt", "aud", "pev", "idk", "op"})


def new_id(prefix: str) -> str:
    """`pay_` + 24 random base62 characters (~143 bits)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def plausible(value: str) -> bool:
    """Could this be one of our ids? (Others cannot be looked up: NUL breaks PostgreSQL.)"""
    return _PLAUSIBLE.fullmatch(value) is not None
