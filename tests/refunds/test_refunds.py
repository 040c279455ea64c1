"""Refunds through HTTP: amounts, states, roles, gateway failures, cancel-with-refund, history."""

from __future__ import annotations

from sqlalchemy import select

from paysvc.audit.models import AuditEntry
from paysvc.bootstrap import Container
from paysvc.payments.repository import PaymentRepository
from paysvc.refunds.models import Refund
from tests.conftest import ADMIN, CUSTOMER, OTHER_CUSTOMER, SERVICE, Api
from tests.refunds.helpers import assert_books_agree, books, refund


async def test_partial_then_the_rest(api: Api, container: Container) -> None:
    payment = await api.paid()
    first = await refund(api, payment["id"], amount=500, reason="requested_by_customer")
    assert first["id"].startswith("re_")
    assert first["object"] == "refund"
    assert first["payment_id"] == payment["id"]
    assert (first["amount"], first["currency"], first["status"]) == (500, "usd", "succeeded")
    assert first["reason"] == "requested_by_customer"
    assert first["failure_reason"] is None
    assert first["metadata"] == {}
    assert first["created_at"].endswith("Z")
    after = await api.get(f"/payments/{payment['id']}")
    assert after["status"] == "partially_refunded"
    assert after["amount_refunded"] == 500

    rest = await refund(api, payment["id"])  # default: all that remains
    assert rest["amount"] == 1499
    assert rest["status"] == "succeeded"
    assert rest["reason"] is None
    done = await api.get(f"/payments/{payment['id']}")
    assert done["status"] == "refunded"
    assert done["amount_refunded"] == 1999

    error = await refund(api, payment["id"], amount=1, status=409)
    assert error["error"]["type"] == "state_conflict"
    assert_books_agree(await books(container, payment["id"]))


async def test_several_partials_sum_exactly_to_the_capture(api: Api, container: Container) -> None:
    payment = await api.paid(amount=1000)
    for expected_status in ("partially_refunded", "partially_refunded", "refunded"):
        await refund(api, payment["id"], amount=250 if expected_status != "refunded" else 500)
        assert (await api.get(f"/payments/{payment['id']}"))["status"] == expected_status
    listed = await api.get(f"/payments/{payment['id']}/refunds", SERVICE)
    assert listed["object"] == "list"
    assert listed["has_more"] is False
    assert listed["next_cursor"] is None
    assert [r["amount"] for r in listed["data"]] == [500, 250, 250]  # newest first
    ledgers = await books(container, payment["id"])
    assert ledgers.payment_refunded == 1000
    assert_books_agree(ledgers)


async def test_list_pagination(api: Api) -> None:
    payment = await api.paid(amount=1000)
    ids = [(await refund(api, payment["id"], amount=100))["id"] for _ in range(3)]
    page = await api.get(f"/payments/{payment['id']}/refunds?limit=2")
    assert page["has_more"] is True
    assert len(page["data"]) == 2
    rest = await api.get(
        f"/payments/{payment['id']}/refunds?limit=2&starting_after={page['next_cursor']}"
    )
    assert rest["has_more"] is False
    assert sorted(r["id"] for r in page["data"] + rest["data"]) == sorted(ids)


async def test_over_refund_is_422_and_changes_nothing(api: Api, container: Container) -> None:
    payment = await api.paid()
    await refund(api, payment["id"], amount=1500)
    error = (await refund(api, payment["id"], amount=500, status=422))["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "amount_exceeds_refundable"
    assert error["param"] == "amount"
    assert "499" in error["message"]
    too_much = await refund(api, (await api.paid(order_id="2"))["id"], amount=2000, status=422)
    assert too_much["error"]["code"] == "amount_exceeds_refundable"
    ledgers = await books(container, payment["id"])
    assert (ledgers.refund_rows, ledgers.payment_refunded) == (1, 1500)
    assert (await api.get(f"/payments/{payment['id']}"))["status"] == "partially_refunded"


async def test_refund_of_a_payment_that_is_not_captured_is_409(
    api: Api, container: Container
) -> None:
    pending = await api.create(order_id="pending")
    authorized = await api.paid(order_id="authorized", capture_method="manual")
    cancelled = await api.create(order_id="cancelled")
    await api.post(f"/payments/{cancelled['id']}/cancel")
    failed = await api.create(order_id="failed")
    await api.post(
        f"/payments/{failed['id']}/confirm",
        {"payment_method": "pm_card_chargeDeclined"},
        status=402,
    )
    for payment in (pending, authorized, cancelled, failed):
        for body in ({}, {"amount": 100}):
            error = await refund(api, payment["id"], status=409, **body)
            assert error["error"]["type"] == "state_conflict"
    async with container.db.transaction(write=False) as session:
        assert list(await session.scalars(select(Refund))) == []


async def test_roles(api: Api) -> None:
    payment = await api.paid()
    denied = await refund(api, payment["id"], CUSTOMER, status=403, amount=100)
    assert denied["error"]["type"] == "permission_error"
    strangers = await refund(api, payment["id"], OTHER_CUSTOMER, status=403, amount=100)
    assert strangers["error"]["type"] == "permission_error"
    by_admin = await refund(api, payment["id"], ADMIN, amount=100)
    by_service = await refund(api, payment["id"], SERVICE, amount=100)

    for who in (CUSTOMER, SERVICE, ADMIN):
        assert (await api.get(f"/refunds/{by_admin['id']}", who)) == by_admin
        listed = await api.get(f"/payments/{payment['id']}/refunds", who)
        assert [r["id"] for r in listed["data"]] == [by_service["id"], by_admin["id"]]

    hidden = (await api.get(f"/refunds/{by_admin['id']}", OTHER_CUSTOMER, status=404))["error"]
    missing = (await api.get("/refunds/re_doesnotexist", OTHER_CUSTOMER, status=404))["error"]
    hidden.pop("request_id")
    missing.pop("request_id")
    assert hidden == missing
    assert hidden["type"] == "not_found"
    hidden_list = await api.get(f"/payments/{payment['id']}/refunds", OTHER_CUSTOMER, status=404)
    missing_list = await api.get("/payments/pay_doesnotexist/refunds", OTHER_CUSTOMER, status=404)
    hidden_list["error"].pop("request_id")
    missing_list["error"].pop("request_id")
    assert hidden_list == missing_list


async def test_refund_of_a_missing_payment_is_404(api: Api) -> None:
    error = await refund(api, "pay_doesnotexist", status=404, amount=100)
    assert error["error"]["type"] == "not_found"


async def test_validation(api: Api) -> None:
    payment = await api.paid()
    for body, param in (
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": "100"}, "amount"),
        ({"amount": 10.5}, "amount"),
        ({"amount": True}, "amount"),
        ({"reason": "abandoned"}, "reason"),
        ({"status": "succeeded"}, "status"),
        ({"metadata": {"k": 1}}, "metadata"),
    ):
        response = await api.post(f"/payments/{payment['id']}/refunds", body, SERVICE, 422)
        assert response["error"]["param"].startswith(param), body
    assert (await api.get(f"/payments/{payment['id']}"))["amount_refunded"] == 0


async def test_failed_refund_leaves_payment_unchanged_and_amount_refundable(
    api: Api, container: Container
) -> None:
    payment = await api.paid("pm_card_refundFail")
    failed = await refund(api, payment["id"], amount=700)
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "declined"
    after = await api.get(f"/payments/{payment['id']}")
    assert (after["status"], after["amount_refunded"]) == ("captured", 0)
    again = await refund(api, payment["id"])  # everything is refundable again
    assert (again["amount"], again["status"]) == (1999, "failed")
    fetched = await api.get(f"/refunds/{failed['id']}", CUSTOMER)
    assert fetched == failed
    ledgers = await books(container, payment["id"])
    assert ledgers.refund_rows == 2
    assert ledgers.refunds_pending == 0
    assert_books_agree(ledgers)


async def test_metadata_is_kept_and_encrypted(api: Api, container: Container) -> None:
    payment = await api.paid()
    created = await refund(api, payment["id"], amount=100, metadata={"ticket": "T-123"})
    assert created["metadata"] == {"ticket": "T-123"}
    assert (await api.get(f"/refunds/{created['id']}"))["metadata"] == {"ticket": "T-123"}
    async with container.db.transaction(write=False) as session:
        row = await session.get(Refund, created["id"])
        assert row is not None and row.meta_enc is not None
        assert "T-123" not in row.meta_enc


async def test_cancel_with_refund_if_captured(api: Api, container: Container) -> None:
    payment = await api.paid()
    await refund(api, payment["id"], amount=500)
    cancelled = await api.post(
        f"/payments/{payment['id']}/cancel",
        {"refund_if_captured": True, "reason": "duplicate"},
        SERVICE,
    )
    assert cancelled["id"] == payment["id"]
    assert cancelled["status"] == "refunded"
    assert cancelled["amount_refunded"] == 1999
    listed = await api.get(f"/payments/{payment['id']}/refunds")
    newest = listed["data"][0]
    assert (newest["amount"], newest["reason"], newest["status"]) == (
        1499,
        "duplicate",
        "succeeded",
    )
    assert_books_agree(await books(container, payment["id"]))

    other = await api.paid(order_id="2")
    by_admin = await api.post(
        f"/payments/{other['id']}/cancel",
        {"refund_if_captured": True, "reason": "abandoned"},
        ADMIN,
    )
    assert (by_admin["status"], by_admin["amount_refunded"]) == ("refunded", 1999)
    reasons = await api.get(f"/payments/{other['id']}/refunds")
    assert reasons["data"][0]["reason"] == "requested_by_customer"


async def test_cancel_with_refund_if_captured_roles_and_states(api: Api) -> None:
    payment = await api.paid()
    denied = await api.post(
        f"/payments/{payment['id']}/cancel", {"refund_if_captured": True}, CUSTOMER, status=403
    )
    assert denied["error"]["type"] == "permission_error"
    without_flag = await api.post(f"/payments/{payment['id']}/cancel", {}, SERVICE, status=409)
    assert without_flag["error"]["type"] == "state_conflict"
    assert (await api.get(f"/payments/{payment['id']}"))["amount_refunded"] == 0

    # An authorization is simply voided; the flag changes nothing there.
    held = await api.paid(order_id="2", capture_method="manual")
    voided = await api.post(f"/payments/{held['id']}/cancel", {"refund_if_captured": True}, SERVICE)
    assert voided["status"] == "cancelled"
    assert (await api.get(f"/payments/{held['id']}/refunds"))["data"] == []

    refunded = await api.post(
        f"/payments/{payment['id']}/cancel", {"refund_if_captured": True}, SERVICE
    )
    assert refunded["status"] == "refunded"
    again = await api.post(
        f"/payments/{payment['id']}/cancel", {"refund_if_captured": True}, SERVICE, status=409
    )
    assert again["error"]["type"] == "state_conflict"


async def test_cancel_with_refund_when_the_gateway_refuses(api: Api) -> None:
    payment = await api.paid("pm_card_refundFail")
    error = (
        await api.post(
            f"/payments/{payment['id']}/cancel", {"refund_if_captured": True}, SERVICE, status=402
        )
    )["error"]
    assert error["type"] == "card_error"
    assert error["code"] == "refund_failed"
    assert error["payment"]["status"] == "captured"
    assert error["payment"]["amount_refunded"] == 0


async def test_refund_events_in_payment_history_and_audit(api: Api, container: Container) -> None:
    payment = await api.paid()
    ok = await refund(api, payment["id"], amount=400, reason="fraudulent")
    failing = await api.paid("pm_card_refundFail", order_id="2")
    bad = await refund(api, failing["id"], amount=300)
    async with container.db.transaction(write=False) as session:
        repo = PaymentRepository(session)
        history = [(e.type, e.to_status, e.amount) for e in await repo.events(payment["id"])]
        failed_history = [(e.type, e.amount) for e in await repo.events(failing["id"])]
        reasons = [e.reason or "" for e in await repo.events(payment["id"])]
        audit = list(
            await session.scalars(
                select(AuditEntry.action).where(AuditEntry.resource_id.in_([ok["id"], bad["id"]]))
            )
        )
    assert ("refund_created", None, 400) in history
    assert ("refund_succeeded", None, 400) in history
    assert ("status_changed", "partially_refunded", 400) in history
    assert any(ok["id"] in reason for reason in reasons)
    assert ("refund_created", 300) in failed_history
    assert ("refund_failed", 300) in failed_history
    assert sorted(audit) == sorted(
        ["refund.created", "refund.succeeded", "refund.created", "refund.failed"]
    )


async def test_openapi_documents_refunds(api: Api) -> None:
    spec = await api.get("/openapi.json")
    assert "/payments/{id}/refunds" in spec["paths"]
    assert "/refunds/{id}" in spec["paths"]
    post = spec["paths"]["/payments/{id}/refunds"]["post"]
    assert "201" in post["responses"]
