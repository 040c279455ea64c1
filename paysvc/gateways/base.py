"""The gateway port: a Protocol over our own frozen data types, and the GatewayError tree.

Nothing outside `paysvc/gateways/` sees a vendor type. Every mutating call carries an
idempotency key derived from our own ids, so a retry after a lost answer never charges twice.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Protocol

# The metadata keys our calls put on the gateway's objects, so that its answers, searches and
# webhooks lead back to our rows even when the call's own answer was lost.
PAYMENT_ID_KEY = "paysvc_payment_id"  # on a PaymentIntent: our payment id
REFUND_ID_KEY = "paysvc_refund_id"  # on a Refund: our refund id


class GatewayPaymentStatus(enum.StrEnum):
    AUTHORIZED = "authorized"  # Stripe: requires_capture
    CAPTURED = "captured"  # Stripe: succeeded
    CANCELED = "canceled"
    FAILED = "failed"  # declined / requires_payment_method after a failed attempt
    PROCESSING = "processing"  # the gateway itself has not decided yet
    REQUIRES_ACTION = "requires_action"  # the customer must authenticate (3-D Secure)


class GatewayRefundStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CardDetails:
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    type: str = "card"


@dataclass(frozen=True, slots=True)
class Decline:
    code: str  # card_declined, expired_card, ...
    decline_code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class NextAction:
    """What the customer must do before the gateway decides (3-D Secure).

    `redirect_to_url`: open `url` in the customer's browser; the gateway sends the browser back
    to `return_url` afterwards. `use_stripe_sdk`: Stripe.js handles it on the client (no URL).
    """

    type: str  # "redirect_to_url" | "use_stripe_sdk"
    url: str | None = None
    return_url: str | None = None

    def as_dict(self) -> dict[str, object]:
        """The contract's `next_action` object."""
        if self.type == "redirect_to_url":
            return {
                "type": self.type,
                "redirect_to_url": {"url": self.url, "return_url": self.return_url},
            }
        return {"type": self.type}


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    payment_id: str
    order_id: str
    amount: int
    currency: str
    capture_method: str  # "automatic" | "manual"
    payment_method: str
    idempotency_key: str
    metadata: dict[str, str] = field(default_factory=dict)
    # Where the gateway sends the customer's browser back after authentication (3-D Secure).
    return_url: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayPayment:
    reference: str  # the gateway's own id (Stripe PaymentIntent id)
    status: GatewayPaymentStatus
    amount: int
    amount_capturable: int
    amount_captured: int
    currency: str
    card: CardDetails | None = None
    decline: Decline | None = None
    # The name of the gateway that holds it (set by StripeGateway and FailoverGateway).
    gateway: str = ""
    # Set when status is REQUIRES_ACTION and the gateway says what the customer must do.
    next_action: NextAction | None = None


@dataclass(frozen=True, slots=True)
class RefundRequest:
    refund_id: str
    payment_reference: str
    amount: int
    currency: str
    reason: str | None
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class GatewayRefund:
    reference: str
    payment_reference: str
    amount: int
    status: GatewayRefundStatus
    failure_reason: str | None = None
    # Our refund id when the gateway carries it (REFUND_ID_KEY); None for a refund made
    # elsewhere (e.g. in the Stripe dashboard).
    refund_id: str | None = None
    reason: str | None = None  # the gateway's reason code, as it gives it


class GatewayError(Exception):
    """Base of every gateway failure."""

    # Which gateway raised it, when a FailoverGateway chose among several: an OutcomeUnknown must
    # be retried on (and reconciled with) that same gateway, never on another one.
    gateway: str = ""


class CardDeclined(GatewayError):
    """The gateway declined the card; the attempt is final and the payment failed."""

    def __init__(self, decline: Decline, payment: GatewayPayment | None = None) -> None:
        super().__init__(decline.message)
        self.decline = decline
        self.payment = payment


class InvalidPaymentMethod(GatewayError):
    """The payment method token is not one the gateway knows. Nothing was charged."""


class GatewayRejected(GatewayError):
    """The gateway refused the request as invalid (not a decline). Nothing happened."""


class GatewayUnavailable(GatewayError):
    """The request certainly did not take effect (could not connect, auth, rate limit).

    Safe to retry, and safe to fail over to another gateway for a new payment.
    """


class OutcomeUnknown(GatewayError):
    """The request may or may not have taken effect (timeout, connection lost, 5xx, Stripe's
    IdempotencyError: the key was used).

    The payment goes `processing` (a refund stays `pending`) until reconciliation asks the
    gateway, or a retry with the same idempotency key gets the answer.
    """


# How long Stripe honours an idempotency key; the sandbox mimics it.
STRIPE_IDEMPOTENCY_WINDOW = dt.timedelta(hours=24)


class Gateway(Protocol):
    name: str
    # How long the gateway honours an idempotency key: inside it, an operation without an
    # answer is re-sent under its key; past it, it becomes `unknown` and is never re-sent.
    idempotency_window: dt.timedelta

    async def charge(self, request: ChargeRequest) -> GatewayPayment:
        """Create and confirm a payment; authorize only when capture_method is manual."""
        ...

    async def capture(
        self, reference: str, amount: int, idempotency_key: str
    ) -> GatewayPayment: ...

    async def cancel(self, reference: str, idempotency_key: str) -> GatewayPayment:
        """Void an authorization."""
        ...

    async def refund(self, request: RefundRequest) -> GatewayRefund: ...

    async def retrieve_payment(self, reference: str) -> GatewayPayment: ...

    async def find_payment(self, payment_id: str) -> GatewayPayment | None:
        """The payment the gateway holds for our payment id, if any (for lost answers)."""
        ...

    async def retrieve_refund(self, reference: str) -> GatewayRefund: ...

    async def find_refund(self, refund_id: str) -> GatewayRefund | None: ...

    async def check_health(self) -> None:
        """Raise GatewayUnavailable when the gateway cannot be reached."""
        ...

    async def close(self) -> None: ...
