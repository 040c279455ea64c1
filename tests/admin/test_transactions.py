"""GET /admin/transactions through HTTP: totals per currency, by status, by day, rates,
ranges and validation. The fixture's payments are made through the API with the container's
clock set to the day each should be created on."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import text

from paysvc.admin.report import ratio
from paysvc.admin.repository import TransactionRepository
from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container
from tests.admin.conftest import SetClock
from tests.conftest import ADMIN, BACKEND, CUSTOMER, SERVICE, Api
from tests.refunds.helpers import refund
from tests.support import rows

RANGE = "from=2026-11-20&to=2026-11-23"
ZERO = {"count": 0, "volume": 0, "captured": 0, "refunded": 0, "net": 0}


def at(day: int, hour: int = 12, minute: int = 0, second: int = 0, micro: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, second, micro, tzinfo=dt.UTC)


async def seed(api: Api, clock: SetClock) -> None:
    """9 payments in range over 3 of its 4 days, 2 currencies, 8 statuses; 2 just outside."""
    orders = iter(range(1, 100))

    async def paid(method: str = "pm_card_visa", **body: Any) -> dict[str, Any]:
        return await api.paid(method, SERVICE, order_id=str(next(orders)), customer_id="17", **body)

    async def pending(**body: Any) -> dict[str, Any]:
        return await api.create(SERVICE, order_id=str(next(orders)), customer_id="17", **body)

    clock.at = at(19, 23, 59, 59, 999_999)  # the last instant before the range
    await paid(amount=12345)
    clock.at = at(20, 0, 0, 0)  # the first instant of the range
    await paid(amount=1000)  # usd captured
    clock.at = at(20, 9)
    partial = await paid(amount=2000)  # usd partially refunded (500)
    await refund(api, partial["id"], amount=500)
    full = await paid(amount=3000, currency="EUR")  # eur refunded
    await refund(api, full["id"])
    declined = await pending(amount=4000)  # usd failed
    await api.post(
        f"/payments/{declined['id']}/confirm",
        {"payment_method": "pm_card_chargeDeclined"},
        SERVICE,
        status=402,
    )
    clock.at = at(21, 23, 59, 59, 900_000)  # late on the 21st: still the 21st in UTC
    await paid(amount=500, capture_method="manual")  # usd authorized
    await pending(amount=700)  # usd pending
    never_confirmed = await pending(amount=800)  # usd cancelled before any confirm
    await api.post(f"/payments/{never_confirmed['id']}/cancel", {}, SERVICE)
    voided = await paid(amount=900, capture_method="manual")  # usd cancelled after authorizing
    await api.post(f"/payments/{voided['id']}/cancel", {}, SERVICE)
    clock.at = at(23, 18)
    await paid("pm_card_timeout", amount=100, currency="eur")  # eur processing
    clock.at = at(24, 0, 0, 0)  # the first instant after the range
    await paid(amount=54321)
    clock.at = at(23, 20)  # "today" for defaults


USD = {
    "count": 7,
    "volume": 1000 + 2000 + 4000 + 500 + 700 + 800 + 900,
    "captured": 3000,
    "refunded": 500,
    "net": 2500,
    # authorized, captured, partially refunded / captured, partially refunded, failed,
    # authorized, cancelled after authorizing (pending and never-confirmed cancelled excluded)
    "success_rate": "0.6000",
    "refund_rate": "0.1667",  # 500 / 3000, rounded half up
}
EUR = {
    "count": 2,
    "volume": 3100,
    "captured": 3000,
    "refunded": 3000,
    "net": 0,
    "success_rate": "0.5000",  # refunded / (refunded + processing)
    "refund_rate": "1.0000",
}
BY_STATUS = {
    "pending": 1,
    "requires_action": 0,
    "processing": 1,
    "authorized": 1,
    "captured": 1,
    "partially_refunded": 1,
    "refunded": 1,
    "failed": 1,
    "cancelled": 2,
}


async def test_totals_and_by_status(api: Api, clock: SetClock) -> None:
    await seed(api, clock)
    body = await api.get(f"/admin/transactions?{RANGE}", ADMIN)
    assert body == {
        "object": "transaction_summary",
        "from": "2026-11-20",
        "to": "2026-11-23",
        "totals": {"eur": EUR, "usd": USD},
        "by_status": BY_STATUS,
    }
    assert list(body["totals"]) == ["eur", "usd"]


async def test_by_day_has_every_day_and_currency(api: Api, clock: SetClock) -> None:
    await seed(api, clock)
    body = await api.get(f"/admin/transactions?{RANGE}&group_by=day", ADMIN)
    assert body["totals"] == {"eur": EUR, "usd": USD}
    days = [(d["date"], d["currency"]) for d in body["by_day"]]
    assert days == [
        (f"2026-11-{day}", currency) for day in (20, 21, 22, 23) for currency in ("eur", "usd")
    ]
    figures = {(d.pop("date"), d.pop("currency")): d for d in body["by_day"]}
    assert figures[("2026-11-20", "usd")] == {
        "count": 3,
        "volume": 7000,
        "captured": 3000,
        "refunded": 500,
        "net": 2500,
    }
    assert figures[("2026-11-20", "eur")] == {
        "count": 1,
        "volume": 3000,
        "captured": 3000,
        "refunded": 3000,
        "net": 0,
    }
    assert figures[("2026-11-21", "usd")] == {**ZERO, "count": 4, "volume": 2900}
    assert figures[("2026-11-21", "eur")] == ZERO
    assert figures[("2026-11-22", "usd")] == ZERO == figures[("2026-11-22", "eur")]
    assert figures[("2026-11-23", "eur")] == {**ZERO, "count": 1, "volume": 100}
    assert figures[("2026-11-23", "usd")] == ZERO
    # The days add up to the totals.
    for currency, totals in body["totals"].items():
        for name in ZERO:
            assert sum(f[name] for (_, c), f in figures.items() if c == currency) == totals[name]


async def test_one_day_range_and_its_edges(api: Api, clock: SetClock) -> None:
    await seed(api, clock)
    body = await api.get("/admin/transactions?from=2026-11-24&to=2026-11-24", ADMIN)
    assert body["totals"]["usd"]["count"] == 1
    assert body["totals"]["usd"]["volume"] == 54321
    body = await api.get("/admin/transactions?from=2026-11-19&to=2026-11-19", ADMIN)
    assert body["totals"]["usd"]["volume"] == 12345


async def test_currency_filter(api: Api, clock: SetClock) -> None:
    await seed(api, clock)
    body = await api.get(f"/admin/transactions?{RANGE}&currency=EUR&group_by=day", ADMIN)
    assert body["currency"] == "eur"
    assert body["totals"] == {"eur": EUR}
    assert sum(body["by_status"].values()) == 2
    assert body["by_status"]["refunded"] == body["by_status"]["processing"] == 1
    assert {d["currency"] for d in body["by_day"]} == {"eur"}
    assert len(body["by_day"]) == 4
    # A currency with nothing in the range is still reported, with zeros and null rates.
    idle = await api.get(f"/admin/transactions?{RANGE}&currency=jpy&group_by=day", ADMIN)
    assert idle["totals"] == {"jpy": {**ZERO, "success_rate": None, "refund_rate": None}}
    assert [d["date"] for d in idle["by_day"]] == [f"2026-11-{d}" for d in (20, 21, 22, 23)]
    assert all(d == {"date": d["date"], "currency": "jpy", **ZERO} for d in idle["by_day"])


async def test_empty_range(api: Api, clock: SetClock) -> None:
    await seed(api, clock)
    body = await api.get("/admin/transactions?from=2025-01-01&to=2025-01-03&group_by=day", ADMIN)
    assert body["totals"] == {}
    assert body["by_status"] == dict.fromkeys(BY_STATUS, 0)
    assert body["by_day"] == []  # no currency had anything; filter by one to get its zeros


async def test_rates_are_null_without_a_denominator(api: Api, clock: SetClock) -> None:
    clock.at = at(25)
    await api.create(SERVICE, customer_id="17")  # pending only: nothing confirmed or captured
    body = await api.get("/admin/transactions", ADMIN)
    assert body["totals"]["usd"] == {
        **ZERO,
        "count": 1,
        "volume": 1999,
        "success_rate": None,
        "refund_rate": None,
    }


async def test_default_is_the_last_30_days(api: Api, clock: SetClock) -> None:
    await seed(api, clock)  # leaves the clock on 2026-11-23
    body = await api.get("/admin/transactions", ADMIN)
    assert (body["from"], body["to"]) == ("2026-10-25", "2026-11-23")
    assert body["totals"]["usd"]["count"] == 1 + 7  # the 19th's and the range's
    assert "by_day" not in body
    only_to = await api.get("/admin/transactions?to=2026-11-20", ADMIN)
    assert (only_to["from"], only_to["to"]) == ("2026-10-22", "2026-11-20")
    only_from = await api.get("/admin/transactions?from=2026-11-01", ADMIN)
    assert (only_from["from"], only_from["to"]) == ("2026-11-01", "2026-11-23")


async def test_the_read_is_audited(api: Api, clock: SetClock, container: Container) -> None:
    clock.at = at(23)
    await api.get(f"/admin/transactions?{RANGE}&currency=usd&group_by=day", ADMIN)
    [entry] = await rows(container, AuditEntry, AuditEntry.action == "transactions.summary")
    assert (entry.actor_id, entry.actor_role, entry.outcome) == ("admin-1", "admin", "success")
    assert '"from": "2026-11-20"' in entry.details
    assert '"group_by": "day"' in entry.details


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("from=2026-11-24&to=2026-11-23", "from"),
        ("from=2025-11-21&to=2026-11-22", "to"),  # 366 days is the most: this is 367
        ("from=2020-01-01", "from"),  # to defaults to today: far over 366 days
        ("from=2026-13-01", "from"),
        ("from=2026-02-30", "from"),
        ("from=20261120", "from"),
        ("to=2026-11-20T00:00:00Z", "to"),
        ("to=", "to"),
        ("group_by=week", "group_by"),
        ("group_by=", "group_by"),
        ("currency=xyz", "currency"),
        ("status=captured", "status"),
    ],
)
async def test_invalid_parameters(api: Api, clock: SetClock, query: str, param: str) -> None:
    clock.at = at(23)
    error = (await api.get(f"/admin/transactions?{query}", ADMIN, status=422))["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


async def test_366_days_fit(api: Api) -> None:
    body = await api.get("/admin/transactions?from=2025-11-22&to=2026-11-22", ADMIN)
    assert (body["from"], body["to"]) == ("2025-11-22", "2026-11-22")
    body = await api.get("/admin/transactions?from=2024-01-01&to=2024-12-31&group_by=day", ADMIN)
    assert body["by_day"] == []
    body = await api.get(
        "/admin/transactions?from=2024-01-01&to=2024-12-31&group_by=day&currency=usd", ADMIN
    )
    assert len(body["by_day"]) == 366


@pytest.mark.parametrize("headers", [CUSTOMER, SERVICE])
async def test_only_admins(api: Api, headers: dict[str, str]) -> None:
    error = (await api.get("/admin/transactions", headers, status=403))["error"]
    assert error["type"] == "permission_error"
    response = await api.client.get("/admin/transactions")
    assert response.status == 401


def test_ratio_is_exact_and_rounds_half_up() -> None:
    assert ratio(19, 20) == "0.9500"
    assert ratio(1, 3) == "0.3333"
    assert ratio(2, 3) == "0.6667"
    assert ratio(1, 32) == "0.0313"  # 0.03125: half up, not half even
    assert ratio(5, 5) == "1.0000"
    assert ratio(0, 7) == "0.0000"
    assert ratio(3, 0) is None


@pytest.mark.skipif(BACKEND != "postgresql", reason="session time zones are PostgreSQL's")
async def test_days_are_utc_whatever_the_session_time_zone(
    api: Api, clock: SetClock, container: Container
) -> None:
    clock.at = at(21, 23, 30)  # 2026-11-22 13:30 in Pacific/Kiritimati (UTC+14)
    await api.create(SERVICE, customer_id="17")
    async with container.db.transaction(write=False) as session:
        await session.execute(text("SET LOCAL TIME ZONE 'Pacific/Kiritimati'"))
        groups = await TransactionRepository(session).groups(
            created_gte=at(21, 0), created_lt=at(22, 0), currency=None, by_day=True
        )
    assert [(g.day, g.count) for g in groups if g.day] == [(dt.date(2026, 11, 21), 1)]
