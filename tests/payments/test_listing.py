"""GET /payments and GET /admin/payments: limits, cursors, filters, visibility."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from paysvc.bootstrap import Container
from tests.conftest import ADMIN, CUSTOMER, OTHER_CUSTOMER, SERVICE, Api, auth


async def walk(api: Api, path: str, headers: dict[str, str], limit: int) -> list[list[str]]:
    """Every page of a listing, following next_cursor."""
    pages: list[list[str]] = []
    separator = "&" if "?" in path else "?"
    url = f"{path}{separator}limit={limit}"
    while True:
        page = await api.get(url, headers)
        assert page["object"] == "list"
        pages.append([p["id"] for p in page["data"]])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return pages
        assert page["next_cursor"] == page["data"][-1]["id"]
        url = f"{path}{separator}limit={limit}&starting_after={page['next_cursor']}"


@pytest.fixture
async def many(api: Api) -> list[str]:
    """25 payments of customer 17 (newest first) and 3 of customer 99."""
    ids = [(await api.create(order_id=f"o{i}"))["id"] for i in range(25)]
    for i in range(3):
        await api.create(OTHER_CUSTOMER, order_id=f"x{i}")
    return ids[::-1]


async def test_cursor_walks_every_page_without_gaps_or_duplicates(
    api: Api, many: list[str]
) -> None:
    pages = await walk(api, "/payments", CUSTOMER, limit=7)
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert [i for page in pages for i in page] == many
    exact = await walk(api, "/payments", CUSTOMER, limit=25)
    assert exact == [many]
    assert [len(p) for p in await walk(api, "/payments", CUSTOMER, limit=1)] == [1] * 25


async def test_default_limit_is_20_and_max_100(api: Api, many: list[str]) -> None:
    page = await api.get("/payments")
    assert len(page["data"]) == 20 and page["has_more"] is True
    page = await api.get("/payments?limit=100")
    assert len(page["data"]) == 25 and page["has_more"] is False


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1.5", ""])
async def test_bad_limit_is_422(api: Api, limit: str) -> None:
    for path in ("/payments", "/admin/payments"):
        error = (await api.get(f"{path}?limit={limit}", ADMIN, status=422))["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", "limit")


async def test_customers_see_only_their_own(api: Api, many: list[str]) -> None:
    theirs = await api.get("/payments?limit=100", OTHER_CUSTOMER)
    assert len(theirs["data"]) == 3
    assert {p["customer_id"] for p in theirs["data"]} == {"99"}
    assert (await api.get("/payments", auth("nobody")))["data"] == []
    assert len((await api.get("/payments?limit=100", SERVICE))["data"]) == 28
    # A cursor from someone else's payment is not a way in.
    error = await api.get(f"/payments?starting_after={many[0]}", OTHER_CUSTOMER, status=422)
    assert error["error"]["param"] == "starting_after"


async def test_unknown_cursor_is_422(api: Api) -> None:
    error = await api.get("/payments?starting_after=pay_nope", status=422)
    assert error["error"]["param"] == "starting_after"


async def test_filters_order_and_status(api: Api) -> None:
    captured = await api.paid(order_id="A")
    pending = await api.create(order_id="B")
    await api.create(order_id="A")
    failed = await api.create(order_id="C")
    await api.post(
        f"/payments/{failed['id']}/confirm",
        {"payment_method": "pm_card_chargeDeclined"},
        status=402,
    )
    by_order = await api.get("/payments?order_id=A")
    assert len(by_order["data"]) == 2 and {p["order_id"] for p in by_order["data"]} == {"A"}
    only = await api.get("/payments?order_id=A&status=captured")
    assert [p["id"] for p in only["data"]] == [captured["id"]]
    assert [p["id"] for p in (await api.get("/payments?status=failed"))["data"]] == [failed["id"]]
    assert pending["id"] in [p["id"] for p in (await api.get("/payments?status=pending"))["data"]]
    assert (await api.get("/payments?order_id=none"))["data"] == []
    assert (await api.get("/payments?status=captured", OTHER_CUSTOMER))["data"] == []
    error = await api.get("/payments?status=paid", status=422)
    assert error["error"]["param"] == "status"
    error = await api.get("/payments?color=red", status=422)
    assert error["error"]["param"] == "color"


async def test_customer_cannot_widen_with_customer_id(api: Api, many: list[str]) -> None:
    error = await api.get("/payments?customer_id=99", status=422)
    assert error["error"]["param"] == "customer_id"


# -- /admin/payments ----------------------------------------------------------------------------


async def test_admin_lists_everyone_and_filters_by_customer(api: Api, many: list[str]) -> None:
    everyone = [i for page in await walk(api, "/admin/payments", ADMIN, limit=10) for i in page]
    assert len(everyone) == len(set(everyone)) == 28
    mine = await walk(api, "/admin/payments?customer_id=17", ADMIN, limit=10)
    assert [i for page in mine for i in page] == many
    theirs = await api.get("/admin/payments?customer_id=99", ADMIN)
    assert len(theirs["data"]) == 3
    assert (await api.get("/admin/payments?order_id=o3", ADMIN))["data"][0]["id"] == many[-4]


@pytest.mark.parametrize("headers", [CUSTOMER, SERVICE], ids=["customer", "service"])
async def test_admin_listing_is_admin_only(api: Api, headers: dict[str, str]) -> None:
    error = await api.get("/admin/payments", headers, status=403)
    assert error["error"]["type"] == "permission_error"


async def test_admin_created_range(api: Api, container: Container) -> None:
    ids = [(await api.create(order_id=f"t{i}"))["id"] for i in range(3)]
    # Put the three payments on three known days.
    days = [dt.datetime(2026, 1, d, 12, tzinfo=dt.UTC) for d in (1, 2, 3)]
    from paysvc.payments.repository import PaymentRepository

    async def backdate(session: Any) -> None:
        for payment_id, day in zip(ids, days, strict=True):
            payment = await PaymentRepository(session).get(payment_id)
            assert payment is not None
            payment.created_at = day

    await container.db.run(backdate)

    async def listed(query: str) -> list[str]:
        return [p["id"] for p in (await api.get(f"/admin/payments?{query}", ADMIN))["data"]]

    assert await listed("created_gte=2026-01-02T00:00:00Z") == [ids[2], ids[1]]
    assert await listed("created_lt=2026-01-02T12:00:00Z") == [ids[0]]
    assert await listed("created_gte=2026-01-02T12:00:00Z&created_lt=2026-01-03T00:00:00Z") == [
        ids[1]
    ]
    assert await listed("created_gte=2026-01-01T13:00:00%2B01:00&limit=5") == ids[::-1]
    page = await api.get("/admin/payments?created_gte=2026-01-01T00:00:00Z&limit=1", ADMIN)
    rest = await listed(f"created_gte=2026-01-01T00:00:00Z&starting_after={page['next_cursor']}")
    assert rest == [ids[1], ids[0]]
    for bad in ("created_gte=yesterday", "created_lt=2026-01-01T00:00:00"):
        error = await api.get(f"/admin/payments?{bad}", ADMIN, status=422)
        assert error["error"]["param"] in ("created_gte", "created_lt")
