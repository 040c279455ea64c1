"""Rejected webhook deliveries, audited in aggregate: one entry per source IP per minute.

A bad signature changes nothing, so it does not deserve a write transaction of its own (100 bad
posts used to be 100 audit rows competing with payments for the database). Each rejection is
counted in memory under (source IP, minute); once the minute is over, one audit entry
`webhook.verification_failed` per source IP records how many there were and why. Minutes are
flushed by the next rejection after them, by the app's background flusher (every few seconds)
and at shutdown; a crash loses at most the counts not flushed yet (the requests themselves
changed nothing). Memory is bounded: past `max_sources` distinct IPs in one minute, the rest
are counted under the origin "other".
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter

from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.audit.service import AuditLog
from paysvc.auth.principal import Actor, Role
from paysvc.clock import Clock, rfc3339
from paysvc.db.engine import Database

log = logging.getLogger(__name__)
ACTION = "webhook.verification_failed"
OTHER = "other"


def _minute(when: dt.datetime) -> dt.datetime:
    return when.replace(second=0, microsecond=0)


class RejectionLog:
    def __init__(
        self, db: Database, audit: AuditLog, clock: Clock, *, max_sources: int = 10_000
    ) -> None:
        self.db = db
        self.audit = audit
        self.clock = clock
        self.max_sources = max_sources
        self._counts: dict[tuple[dt.datetime, str], Counter[str]] = {}

    def note(self, origin: str, reason: str) -> None:
        """Count one rejection (in memory, no I/O)."""
        minute = _minute(self.clock.now())
        key = (minute, origin)
        if key not in self._counts and len(self._counts) >= self.max_sources:
            key = (minute, OTHER)
        self._counts.setdefault(key, Counter())[reason] += 1

    def due(self) -> bool:
        """True when a minute that is over still has counts to write."""
        current = _minute(self.clock.now())
        return any(minute < current for minute, _ in self._counts)

    async def flush(self, *, everything: bool = False) -> int:
        """Write one audit entry per (source IP, minute) that is over (or every one, at
        shutdown); returns how many entries were written."""
        current = _minute(self.clock.now())
        ready = {
            key: reasons for key, reasons in self._counts.items() if everything or key[0] < current
        }
        if not ready:
            return 0
        for key in ready:
            del self._counts[key]

        async def work(session: AsyncSession) -> None:
            for (minute, origin), reasons in sorted(ready.items()):
                self.audit.record(
                    session,
                    Actor(id="stripe", role=Role.SERVICE, origin=origin),
                    ACTION,
                    "webhook",
                    "stripe",
                    outcome="denied",
                    details={
                        "count": sum(reasons.values()),
                        "minute": rfc3339(minute),
                        "reasons": dict(sorted(reasons.items())),
                    },
                )

        try:
            await self.db.run(work)
        except Exception:
            log.exception("could not audit rejected webhooks; the counts are kept for later")
            for key, reasons in ready.items():
                self._counts.setdefault(key, Counter()).update(reasons)
            return 0
        return len(ready)
