"""Time: one injectable clock and the RFC 3339 rendering used everywhere."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """Databases may hand back naive datetimes (SQLite); they are always UTC here."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def rfc3339(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> dt.timedelta:
    """`90s`, `15m`, `24h`, `7d` -> timedelta; raises ValueError on anything else."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 15m, 24h, 7d)")
    return dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
