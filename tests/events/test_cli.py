"""`paysvc events list|redeliver` on the database the running app delivers from."""

from __future__ import annotations

import json

from paysvc.bootstrap import Container
from paysvc.events.models import EventDelivery
from tests.cli.test_cli import apaysvc, one_error_line
from tests.conftest import Api
from tests.events.conftest import wake
from tests.platform_peers import Peers
from tests.support import ManualClock, eventually, rows


async def test_list_dead_and_redeliver_them(
    api: Api, container: Container, peers: Peers, clock: ManualClock, database_url: str
) -> None:
    peers.answer = 500
    payment = await api.create()

    async def dead() -> bool:
        (delivery,) = await rows(container, EventDelivery)
        if delivery.status != "dead":
            clock.advance(6 * 3600)
            wake(container)
        return delivery.status == "dead"

    await eventually(dead)
    listed = await apaysvc(database_url, "events", "list", "--status", "dead", "--json")
    assert listed.exit_code == 0, listed.output
    (event,) = json.loads(listed.stdout)
    assert (event["type"], event["payment_id"]) == ("payment.created", payment["id"])
    assert event["deliveries"][0]["status"] == "dead"
    table = await apaysvc(database_url, "events", "list", "--payment", payment["id"])
    assert event["id"] in table.stdout and "order: dead" in table.stdout
    assert "500" in table.stdout

    usage = await apaysvc(database_url, "events", "redeliver")
    assert usage.exit_code == 2 and "--dead" in one_error_line(usage)
    missing = await apaysvc(database_url, "events", "redeliver", "evt_nothing")
    assert missing.exit_code == 1 and "No such event" in one_error_line(missing)

    peers.answer = 200
    again = await apaysvc(database_url, "events", "redeliver", "--dead", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {"id": None, "queued": 1}
    wake(container)  # the CLI's commit cannot wake this process's dispatcher
    await peers.wait_for(lambda p: len(p.events("order")) == 1, "the redelivered event")
    assert peers.events("order")[0]["id"] == event["id"]
    assert (
        await apaysvc(database_url, "events", "list", "--status", "dead", "--json")
    ).stdout.strip() == "[]"
