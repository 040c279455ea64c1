"""The Stripe adapter: PaymentIntents and Refunds through the official SDK's async API.

This is the only module that imports `stripe`. Stripe objects never leave it: every answer is
read as plain JSON data (`StripeObject.to_dict()`) through the small typed readers at the bottom
and turned into our own frozen types. Reading the JSON rather than the SDK's typed attributes
keeps the adapter working against Stripe-compatible servers that omit fields (localstripe has no
`amount_capturable`/`amount_received`), and keeps `Any` inside those readers.

Error mapping (the contract of `base.GatewayError`):
- `CardError` -> `CardDeclined` (with the PaymentIntent when Stripe, or a lookup, gives it);
- a missing payment method -> `InvalidPaymentMethod`; other `InvalidRequestError` ->
  `GatewayRejected`;
- authentication, permission, rate limit, and connection errors where the request certainly
  never left (connection refused, DNS, TLS handshake, connect timeout) -> `GatewayUnavailable`;
- timeouts after connecting, connections lost mid-request, `APIError` (5xx, unreadable
  answers), `IdempotencyError` (the key was used: 409 in use, or other parameters) ->
  `OutcomeUnknown`, settled by lookup.

Messages carry our operation, Stripe's error type/code and request id, never the secret key or
card data; SDK exceptions are not chained (an `AuthenticationError` echoes part of the key).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp
import stripe

from paysvc.gateways.base import (
    PAYMENT_ID_KEY,
    REFUND_ID_KEY,
    STRIPE_IDEMPOTENCY_WINDOW,
    CardDeclined,
    CardDetails,
    ChargeRequest,
    Decline,
    GatewayError,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRefundStatus,
    GatewayRejected,
    GatewayUnavailable,
    InvalidPaymentMethod,
    OutcomeUnknown,
    RefundRequest,
)
from paysvc.webhooks.stripe_objects import next_action_of

T = TypeVar("T")
Json = Mapping[str, Any]  # Stripe's JSON, read only through the typed readers below

STRIPE_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
SCAN_LIMIT = 1000  # list fallback: how many recent objects find_payment/find_refund look through
_PAGE = 100
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRETS = re.compile(r"\b(?:sk|rk|pk|whsec)_\w+|\d{12,19}")

_STATUS = {
    "requires_capture": GatewayPaymentStatus.AUTHORIZED,
    "succeeded": GatewayPaymentStatus.CAPTURED,
    "canceled": GatewayPaymentStatus.CANCELED,
    "processing": GatewayPaymentStatus.PROCESSING,
    # We confirm at creation, so these mean the attempt failed (declined, or authentication
    # failed: requires_payment_method with last_payment_error).
    "requires_payment_method": GatewayPaymentStatus.FAILED,
    "requires_confirmation": GatewayPaymentStatus.FAILED,
    # The customer must authenticate (3-D Secure): `next_action` says how.
    "requires_action": GatewayPaymentStatus.REQUIRES_ACTION,
}
_REFUND_STATUS = {
    "pending": GatewayRefundStatus.PENDING,
    "requires_action": GatewayRefundStatus.PENDING,
    "succeeded": GatewayRefundStatus.SUCCEEDED,
    "failed": GatewayRefundStatus.FAILED,
    "canceled": GatewayRefundStatus.FAILED,
}
# What the SDK lets escape: its own errors, and aiohttp's raw ones while it reads a response body.
_TRANSPORT_ERRORS = (stripe.StripeError, aiohttp.ClientError, TimeoutError)


NAME = "stripe"


class StripeGateway:
    name = NAME
    idempotency_window = STRIPE_IDEMPOTENCY_WINDOW

    def __init__(
        self, secret_key: str, api_base: str | None = None, timeout_seconds: float = 20.0
    ) -> None:
        if not secret_key:
            raise ValueError("StripeGateway needs a secret key")
        timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=min(timeout_seconds, 10.0)
        )
        self._http = stripe.AIOHTTPClient(timeout=timeout)
        self._client = stripe.StripeClient(
            secret_key,
            http_client=self._http,
            base_addresses={"api": api_base} if api_base else None,
            # No silent retries: our own idempotency keys and reconciliation own that decision.
            max_network_retries=0,
        )
        # Optional parameters the server refused as unknown (see _learn_unsupported).
        self._unsupported: set[str] = set()

    async def charge(self, request: ChargeRequest) -> GatewayPayment:
        """Create and confirm in one call (`confirm=True`), under the caller's idempotency key.

        One call means one key, and no PaymentIntent left unconfirmed by a crash between two
        calls. `automatic_payment_methods[allow_redirects]=never` is what Stripe requires to
        confirm server-side without a `return_url` (card only, no redirects; a 3-D Secure
        challenge then comes as `use_stripe_sdk`). With the caller's `return_url`, redirects are
        allowed and a challenge comes as `redirect_to_url`.
        """
        params: stripe.params.PaymentIntentCreateParams = {
            "amount": request.amount,
            "currency": request.currency.lower(),
            "capture_method": "manual" if request.capture_method == "manual" else "automatic",
            "payment_method": request.payment_method,
            "confirm": True,
            "metadata": {
                **request.metadata,
                PAYMENT_ID_KEY: request.payment_id,
                "order_id": request.order_id,
            },
            "expand": ["payment_method"],
        }
        if "automatic_payment_methods" not in self._unsupported:
            params["automatic_payment_methods"] = (
                {"enabled": True}
                if request.return_url
                else {"enabled": True, "allow_redirects": "never"}
            )
        if request.return_url and "return_url" not in self._unsupported:
            params["return_url"] = request.return_url
        try:
            intent = await self._call(
                "charge",
                self._client.v1.payment_intents.create_async(
                    params, {"idempotency_key": request.idempotency_key}
                ),
            )
        except GatewayRejected as exc:
            if not (
                self._learn_unsupported(exc, "automatic_payment_methods")
                or self._learn_unsupported(exc, "return_url")
            ):
                raise
            return await self.charge(request)
        except CardDeclined as exc:
            if exc.payment is None:  # Stripe puts the PaymentIntent in the error; others may not
                exc.payment = await self._find_quietly(request.payment_id, exc.decline)
            raise
        payment = _payment(intent.to_dict())
        if payment.status is GatewayPaymentStatus.FAILED:
            raise CardDeclined(payment.decline or _generic_failure(), payment)
        return payment

    async def capture(self, reference: str, amount: int, idempotency_key: str) -> GatewayPayment:
        intent = await self._call(
            "capture",
            self._client.v1.payment_intents.capture_async(
                reference,
                {"amount_to_capture": amount, "expand": ["payment_method"]},
                {"idempotency_key": idempotency_key},
            ),
        )
        data = intent.to_dict()
        captured = _payment(data)
        if (
            _opt_int(data, "amount_received") is None
            and captured.status is GatewayPaymentStatus.CAPTURED
        ):
            # The answer does not say how much was captured: what we asked for, not the
            # authorized amount (a partial capture releases the rest).
            captured = replace(captured, amount_captured=amount)
        return captured

    async def cancel(self, reference: str, idempotency_key: str) -> GatewayPayment:
        intent = await self._call(
            "cancel",
            self._client.v1.payment_intents.cancel_async(
                reference, {"expand": ["payment_method"]}, {"idempotency_key": idempotency_key}
            ),
        )
        return _payment(intent.to_dict())

    async def refund(self, request: RefundRequest) -> GatewayRefund:
        params: stripe.params.RefundCreateParams = {
            "payment_intent": request.payment_reference,
            "amount": request.amount,
            "metadata": {REFUND_ID_KEY: request.refund_id},
        }
        if request.reason in STRIPE_REFUND_REASONS and "reason" not in self._unsupported:
            params["reason"] = request.reason
        try:
            refund = await self._call(
                "refund",
                self._client.v1.refunds.create_async(
                    params, {"idempotency_key": request.idempotency_key}
                ),
            )
        except GatewayRejected as exc:
            if not self._learn_unsupported(exc, "reason"):
                raise
            return await self.refund(request)
        return _refund(refund.to_dict())

    async def retrieve_payment(self, reference: str) -> GatewayPayment:
        intent = await self._call(
            "retrieve_payment",
            self._client.v1.payment_intents.retrieve_async(
                reference, {"expand": ["payment_method"]}
            ),
        )
        return _payment(intent.to_dict())

    async def find_payment(self, payment_id: str) -> GatewayPayment | None:
        """The PaymentIntent whose metadata names our payment id, if Stripe has one.

        Search first (it covers any age), then the most recent `SCAN_LIMIT` PaymentIntents:
        Stripe's search index lags writes by up to a minute (more during incidents), which is
        exactly when a lost answer gets reconciled; and some servers have no search at all
        (localstripe answers 404; Stripe disables it for merchants in India).
        """
        if not _SAFE_ID.fullmatch(payment_id):
            raise GatewayRejected("stripe find_payment: not a payment id")
        found = await self._search_intent(payment_id)
        if found is None:
            found = await self._scan_intents(payment_id)
        return None if found is None else _payment(found)

    async def retrieve_refund(self, reference: str) -> GatewayRefund:
        refund = await self._call(
            "retrieve_refund", self._client.v1.refunds.retrieve_async(reference)
        )
        return _refund(refund.to_dict())

    async def find_refund(self, refund_id: str) -> GatewayRefund | None:
        """Stripe has no refund search: look through the most recent `SCAN_LIMIT` refunds."""
        starting_after: str | None = None
        for _ in range(SCAN_LIMIT // _PAGE):
            params: stripe.params.RefundListParams = {"limit": _PAGE}
            if starting_after:
                params["starting_after"] = starting_after
            page = await self._call("find_refund", self._client.v1.refunds.list_async(params))
            items = [item.to_dict() for item in page.data]
            for item in items:
                if _obj(item, "metadata").get(REFUND_ID_KEY) == refund_id:
                    return _refund(item)
            if not page.has_more or not items:
                return None
            starting_after = _str(items[-1], "id")
        return None

    async def check_health(self) -> None:
        """One cheap authenticated read (the balance); any failure means unavailable."""
        try:
            await self._call("check_health", self._client.v1.balance.retrieve_async())
        except GatewayError as exc:
            raise GatewayUnavailable(str(exc)) from None

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    # -- internals ---------------------------------------------------------------------------

    def _learn_unsupported(self, exc: GatewayRejected, param: str) -> bool:
        """True (once) when a Stripe-compatible server refused `param` as unknown.

        Stripe needs `automatic_payment_methods` to confirm server-side and accepts a refund
        `reason`; localstripe refuses both ("Unexpected <param>"). A request refused in
        validation did nothing (and Stripe keeps no idempotent result for it), so it is safe
        to send it again without that parameter; the gateway remembers not to send it again.
        """
        if param in self._unsupported or f"Unexpected {param}" not in str(exc):
            return False
        self._unsupported.add(param)
        return True

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except _TRANSPORT_ERRORS as exc:
            raise _translate(exc, operation) from None

    async def _find_quietly(self, payment_id: str, decline: Decline) -> GatewayPayment | None:
        """After a decline that did not carry the PaymentIntent: look it up, best effort."""
        try:
            found = await self.find_payment(payment_id)
        except GatewayError:
            return None
        if found is None:
            return None
        return replace(
            found,
            status=GatewayPaymentStatus.FAILED,
            amount_capturable=0,
            amount_captured=0,
            decline=decline,
        )

    async def _search_intent(self, payment_id: str) -> Json | None:
        query = f"metadata['{PAYMENT_ID_KEY}']:'{payment_id}'"
        try:
            result = await self._client.v1.payment_intents.search_async(
                {"query": query, "limit": 10, "expand": ["data.payment_method"]}
            )
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:  # no search endpoint on this server
                return None
            raise _translate(exc, "find_payment") from None
        except _TRANSPORT_ERRORS as exc:
            raise _translate(exc, "find_payment") from None
        items = [item.to_dict() for item in result.data]
        return max(items, key=lambda item: _opt_int(item, "created") or 0, default=None)

    async def _scan_intents(self, payment_id: str) -> Json | None:
        starting_after: str | None = None
        for _ in range(SCAN_LIMIT // _PAGE):
            params: stripe.params.PaymentIntentListParams = {
                "limit": _PAGE,
                "expand": ["data.payment_method"],
            }
            if starting_after:
                params["starting_after"] = starting_after
            page = await self._call(
                "find_payment", self._client.v1.payment_intents.list_async(params)
            )
            items = [item.to_dict() for item in page.data]
            for item in items:
                if _obj(item, "metadata").get(PAYMENT_ID_KEY) == payment_id:
                    return item
            if not page.has_more or not items:
                return None
            starting_after = _str(items[-1], "id")
        return None


# -- error translation -------------------------------------------------------------------------


def _translate(exc: BaseException, operation: str) -> GatewayError:
    where = f"stripe {operation}"
    if isinstance(exc, stripe.StripeError):
        where += f" ({type(exc).__name__}, http {exc.http_status}, code {exc.code}"
        where += f", request {exc.request_id})" if exc.request_id else ")"
    if isinstance(exc, stripe.CardError):
        decline = _decline_of(exc)
        intent = _obj(_error_data(exc), "payment_intent")
        payment = _payment(intent, decline) if intent else None
        return CardDeclined(decline, payment)
    if isinstance(exc, stripe.InvalidRequestError):
        if _names_missing_payment_method(exc, operation):
            return InvalidPaymentMethod(f"{where}: no such payment method")
        return GatewayRejected(f"{where}: {_safe(exc.user_message)}")
    if isinstance(exc, stripe.IdempotencyError):
        # The key *was* used (a request with it is still running, or ran with other
        # parameters): whatever it did may have taken effect. Settled by lookup, never by
        # a new key.
        return OutcomeUnknown(f"{where}: idempotency key already used")
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return GatewayUnavailable(f"{where}: Stripe refused our credentials")
    if isinstance(exc, stripe.RateLimitError):
        return GatewayUnavailable(f"{where}: rate limited")
    if _never_sent(exc):
        return GatewayUnavailable(f"{where}: could not connect")
    return OutcomeUnknown(f"{where}: the outcome is unknown")


def _never_sent(exc: BaseException) -> bool:
    """Connection refused, DNS, TLS handshake or connect timeout: the request never left."""
    cause = exc.__cause__ if isinstance(exc, stripe.APIConnectionError) else exc
    return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def _names_missing_payment_method(exc: stripe.InvalidRequestError, operation: str) -> bool:
    if exc.code == "resource_missing" and exc.param == "payment_method":
        return True  # Stripe: 400 "No such PaymentMethod"
    # localstripe answers a bare 404 "Not Found"; the payment method is the only id a charge sends.
    return operation == "charge" and exc.http_status == 404 and exc.code is None


def _decline_of(exc: stripe.CardError) -> Decline:
    data = _error_data(exc)
    return Decline(
        code=exc.code or "card_declined",
        decline_code=_opt_str(data, "decline_code"),
        message=_safe(exc.user_message or "Your card was declined."),
    )


def _error_data(exc: stripe.StripeError) -> Json:
    body = exc.json_body
    return _obj(body, "error") if isinstance(body, Mapping) else {}


def _safe(message: str | None) -> str:
    return _SECRETS.sub("[redacted]", message or "")[:500]


# -- JSON readers ------------------------------------------------------------------------------


def _payment(data: Json, decline: Decline | None = None) -> GatewayPayment:
    status = _STATUS.get(_str(data, "status"), GatewayPaymentStatus.PROCESSING)
    amount = _int(data, "amount")
    capturable = _opt_int(data, "amount_capturable")
    received = _opt_int(data, "amount_received")
    failed = status is GatewayPaymentStatus.FAILED
    return GatewayPayment(
        reference=_str(data, "id"),
        status=status,
        amount=amount,
        amount_capturable=(
            capturable
            if capturable is not None
            else amount
            if status is GatewayPaymentStatus.AUTHORIZED
            else 0
        ),
        amount_captured=(
            received
            if received is not None
            else amount
            if status is GatewayPaymentStatus.CAPTURED
            else 0
        ),
        currency=_str(data, "currency").lower(),
        card=_card(data),
        decline=(decline or _last_decline(data)) if failed else None,
        gateway=NAME,
        next_action=(
            next_action_of(data) if status is GatewayPaymentStatus.REQUIRES_ACTION else None
        ),
    )


def _refund(data: Json) -> GatewayRefund:
    return GatewayRefund(
        reference=_str(data, "id"),
        payment_reference=_str(data, "payment_intent"),
        amount=_int(data, "amount"),
        status=_REFUND_STATUS.get(_str(data, "status"), GatewayRefundStatus.PENDING),
        failure_reason=_opt_str(data, "failure_reason"),
        refund_id=_opt_str(_obj(data, "metadata"), REFUND_ID_KEY),
        reason=_opt_str(data, "reason"),
    )


def _card(data: Json) -> CardDetails | None:
    """From the expanded PaymentMethod, the failed attempt's one, or the latest Charge."""
    for source in (
        _obj(data, "payment_method"),
        _obj(_obj(data, "last_payment_error"), "payment_method"),
        _obj(_obj(data, "latest_charge"), "payment_method_details"),
    ):
        card = _obj(source, "card")
        if card.get("last4"):
            return CardDetails(
                brand=_str(card, "brand"),
                last4=_str(card, "last4"),
                exp_month=_int(card, "exp_month"),
                exp_year=_int(card, "exp_year"),
            )
    return None


def _last_decline(data: Json) -> Decline:
    """Why the last attempt failed: a decline, or `payment_intent_authentication_failure`."""
    error = _obj(data, "last_payment_error")
    if not error:
        return _generic_failure()
    return Decline(
        code=_opt_str(error, "code") or "card_declined",
        decline_code=_opt_str(error, "decline_code"),
        message=_safe(_opt_str(error, "message") or "Your card was declined."),
    )


def _generic_failure() -> Decline:
    return Decline("card_declined", None, "The payment was not completed.")


def _obj(data: object, key: str) -> Json:
    value = data.get(key) if isinstance(data, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _str(data: Json, key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _opt_str(data: Json, key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _int(data: Json, key: str) -> int:
    return _opt_int(data, key) or 0


def _opt_int(data: Json, key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None
