"""Found by scripts/chaos (seed 23, SQLite, 8 kills): a request slower than the idempotency
take-over (here: its gateway call is slow) is still running when its retry re-attaches; the
first answers 202 `processing` (its gateway answer was lost) and stores it, the retry answers
200 `captured` (the completer found the charge). One key, two outcomes. Whichever stores its
outcome first, both must answer with that one."""

from __future__ import annotations

import asyncio
from typing import Any

from paysvc.web.app import create_app
from tests.conftest import CUSTOMER, Api, make_settings
from tests.faults import Fault, faulty_container
from tests.support import ManualClock


async def test_a_retry_that_re_attaches_while_the_first_attempt_runs_gets_its_outcome(
    database_url: str, aiohttp_client: Any
) -> None:
    clock = ManualClock()
    container, faulty = faulty_container(make_settings(database_url), clock)
    api = Api(await aiohttp_client(create_app(container)))
    payment = await api.create()
    path = f"/payments/{payment['id']}/confirm"
    headers = {**CUSTOMER, "Idempotency-Key": "confirm-1"}
    body = {"payment_method": "pm_card_timeout"}  # the charge happens, its answer is lost

    async def post() -> tuple[int, dict[str, Any]]:
        response = await api.client.post(path, json=body, headers=headers)
        return response.status, await response.json()

    faulty.plan("charge", Fault.STALL)  # the first attempt's gateway call is slow
    first = asyncio.create_task(post())
    await faulty.stalled(1)
    clock.advance(container.settings.timing.idempotency_takeover.total_seconds() + 1)
    faulty.plan("find_payment", Fault.STALL)  # the retry re-attaches and asks the gateway
    retry = asyncio.create_task(post())
    await faulty.stalled(2)
    faulty.release()  # the first attempt: charged, answer lost -> 202, stored
    first_status, first_body = await first
    faulty.release()  # the retry's lookup finds the charge
    retry_status, retry_body = await retry

    assert first_status == 202 and first_body["status"] == "processing"
    assert (retry_status, retry_body) == (first_status, first_body)
    assert await post() == (first_status, first_body)  # and every later replay
