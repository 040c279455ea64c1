"""`GET /payments/{id}` reads its row outside the ORM (paysvc.db.reads): the payment it renders
is the one the ORM wrote and renders, field for field (encrypted fields opened, times in UTC,
card and 3-D Secure details), on both databases; and it sees each change once committed."""

from __future__ import annotations

from paysvc.bootstrap import Container
from paysvc.payments.models import Payment
from tests.conftest import ADMIN, CUSTOMER, OTHER_CUSTOMER, Api


async def test_get_renders_what_the_orm_wrote(api: Api) -> None:
    created = await api.create(
        description="A hat",
        metadata={"colour": "red", "size": "L"},
        receipt_email="someone@example.com",
        capture_method="manual",
    )
    assert await api.get(f"/payments/{created['id']}") == created
    confirmed = await api.post(
        f"/payments/{created['id']}/confirm", {"payment_method": "pm_card_visa"}
    )
    assert confirmed["status"] == "authorized"
    assert confirmed["payment_method"]["last4"] == "4242"
    assert await api.get(f"/payments/{created['id']}") == confirmed
    assert await api.get(f"/payments/{created['id']}", headers=ADMIN) == confirmed


async def test_get_shows_the_3ds_next_action_the_confirm_answered(api: Api) -> None:
    created = await api.create()
    answered = await api.post(
        f"/payments/{created['id']}/confirm",
        {"payment_method": "pm_card_threeDSecure2Required", "return_url": "https://shop.test/r"},
    )
    assert answered["status"] == "requires_action"
    assert answered["next_action"]["redirect_to_url"]["url"]
    assert await api.get(f"/payments/{created['id']}") == answered


async def test_get_sees_a_stored_change_at_once_and_hides_strangers(
    api: Api, container: Container
) -> None:
    created = await api.create(description="before")
    async with container.db.transaction() as session:
        payment = await session.get(Payment, created["id"])
        assert payment is not None
        payment.description = "after"
    assert (await api.get(f"/payments/{created['id']}"))["description"] == "after"
    missing = await api.get(f"/payments/{created['id']}", headers=OTHER_CUSTOMER, status=404)
    assert missing["error"]["code"] == "resource_missing"
    assert (await api.get(f"/payments/{created['id']}", headers=CUSTOMER))["id"] == created["id"]
