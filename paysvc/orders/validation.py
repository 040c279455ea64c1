"""Order validation (`ORDER_VALIDATION=strict`): before an intent is created, the order service
is asked about the order, with the caller's token, and must agree.

The answer may be ours (`customer_id`, `amount` in minor units) or the platform's order service
(`{"id": 42, "user_id": 17, "total": 40.0, "currency": "USD", "status": "PENDING"}`): the owner
is `customer_id` or `user_id` (string or integer), the total a decimal (string or JSON number,
read as a Decimal, never a float) converted exactly through the currency's exponent.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from paysvc.errors import InvalidRequest, PaysvcError, StateConflict
from paysvc.money import exponent

LOOKUP_TIMEOUT = 5.0


class OrderServiceDown(Exception):
    """No usable answer: unreachable, slower than LOOKUP_TIMEOUT, 5xx or not JSON."""


class OrderLookup(Protocol):
    async def fetch(self, order_id: str, authorization: str | None) -> tuple[int, Any]:
        """The order service's status code and JSON body (numbers with a fraction as
        Decimal); raises OrderServiceDown."""
        ...


class OrderServiceUnavailable(PaysvcError):
    type = "api_error"
    code = "order_service_unavailable"
    http_status = 503


def _unavailable(why: str) -> OrderServiceUnavailable:
    return OrderServiceUnavailable(
        f"The order service could not confirm the order ({why}); try again later"
    )


def _not_found() -> InvalidRequest:
    return InvalidRequest("No such order", param="order_id", code="order_not_found")


class OrderValidator:
    def __init__(self, payable_statuses: Iterable[str]) -> None:
        self.payable = frozenset(s.lower() for s in payable_statuses)
        self.lookup: OrderLookup | None = None  # set by the app (HTTP); None fails closed

    async def check(
        self,
        order_id: str,
        customer_id: str,
        amount: int,
        currency: str,
        authorization: str | None,
    ) -> None:
        """Raise unless the order exists, is the customer's, matches amount and currency and
        is payable. Another customer's order is exactly like a missing one."""
        if self.lookup is None:
            raise _unavailable("no order service client")
        try:
            status, body = await self.lookup.fetch(order_id, authorization)
        except OrderServiceDown as error:
            raise _unavailable(str(error)) from None
        if status in (403, 404):
            raise _not_found()
        if status != 200 or not isinstance(body, dict):
            raise _unavailable(f"answer {status}")
        owner = body.get("customer_id", body.get("user_id"))
        if isinstance(owner, bool) or not isinstance(owner, str | int):
            raise _unavailable("no customer in the order")
        if str(owner) != customer_id:
            raise _not_found()
        theirs = body.get("currency")
        if not isinstance(theirs, str):
            raise _unavailable("no currency in the order")
        if theirs.strip().lower() != currency:
            raise InvalidRequest(
                f"currency: the order is in {theirs.upper()}",
                param="currency",
                code="order_mismatch",
            )
        if _minor_total(body, currency) != amount:
            raise InvalidRequest(
                "amount: differs from the order's total", param="amount", code="order_mismatch"
            )
        state = body.get("status")
        if not isinstance(state, str):
            raise _unavailable("no status in the order")
        if state.strip().lower() not in self.payable:
            raise StateConflict(
                f"The order is {state.lower()}, not payable", code="order_not_payable"
            )


def _minor_total(body: dict[str, Any], currency: str) -> int | None:
    """The order's total in minor units; None when it has no exact minor-unit value."""
    if "amount" in body:
        value = body["amount"]
        if isinstance(value, bool) or not isinstance(value, int):
            raise _unavailable("amount is not an integer")
        return value
    total = body.get("total")
    if isinstance(total, bool) or not isinstance(total, str | int | Decimal):
        raise _unavailable("no total in the order")
    try:
        minor = Decimal(total).scaleb(exponent(currency))
    except InvalidOperation:
        raise _unavailable("total is not a number") from None
    if not minor.is_finite() or minor != minor.to_integral_value():
        return None  # more decimals than the currency has: cannot be our amount
    return int(minor)
