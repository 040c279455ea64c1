"""What the app's background workers (the audit sealer, the event dispatcher) share."""

from __future__ import annotations

import asyncio
import math
import time


class Wakeable:
    """A worker woken early by `wake()` (e.g. right after a commit that gave it work) and
    stopped by `stop()`: the pass in progress finishes — a worker is never cancelled inside a
    write transaction — and `run()` returns.

    `pace`: while busy, the worker takes work from the database at most every `pace` seconds
    (`paced()` before each take), so the commits of a busy moment are taken in one transaction
    instead of one each; after a quiet moment it takes at once."""

    def __init__(self, pace: float = 0.0) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        self.pace = pace
        self._paced_at = -math.inf

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def paced(self) -> None:
        """Wait until `pace` seconds after the previous call (no wait once stopping)."""
        if not self._stopping:
            await asyncio.sleep(max(self._paced_at + self.pace - time.monotonic(), 0.0))
        self._paced_at = time.monotonic()
