"""The in-process reconciler: every `interval` seconds, settle stuck payments and apply
webhook events that were waiting for their payment. Safe with several instances running."""

from __future__ import annotations

import asyncio
import logging

from paysvc.reconcile.service import ReconcileService

log = logging.getLogger(__name__)


async def reconcile_forever(service: ReconcileService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            report = await service.run_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background reconciliation failed; will retry")
            continue
        if report.items or report.errors or report.webhooks_applied:
            log.info(
                "background reconciliation: %d drift, %d errors, %d webhook events applied",
                len(report.items),
                len(report.errors),
                report.webhooks_applied,
            )
