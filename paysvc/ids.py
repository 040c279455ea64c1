"""Opaque, prefixed, random identifiers (never sequential)."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits
PREFIXES = frozenset({"pay", "re", "dp", "evt", "aud", "pev", "idk"})


def new_id(prefix: str) -> str:
    """`pay_` + 24 random base62 characters (~143 bits)."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    return prefix + "_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))
