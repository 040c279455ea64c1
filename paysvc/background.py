"""What the app's background workers (the audit sealer, the event dispatcher) share."""

from __future__ import annotations

import asyncio


class Wakeable:
    """A worker woken early by `wake()` (e.g. right after a commit that gave it work) and
    stopped by `stop()`: the pass in progress finishes — a worker is never cancelled inside a
    write transaction — and `run()` returns."""

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
