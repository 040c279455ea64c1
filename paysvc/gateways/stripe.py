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
from typing import TypeVar

import aiohttp
import stripe

from paysvc.gateways.base import (
    PAYMENT_ID_KEY,
    REFUND_ID_KEY,
    STRIPE_IDEMPOTENCY_WINDOW,
    CardDeclined,
    ChargeRequest,
    Decline,
    GatewayError,
    GatewayPayment,
    GatewayPaymentStatus,
    GatewayRefund,
    GatewayRejected,
    GatewayUnavailable,
    InvalidPaymentMethod,
    OutcomeUnknown,
    RefundRequest,
)
from paysvc.gateways.stripe_json import (
    NAME,
    Json,
    generic_failure,
    obj,
    opt_number,
    opt_text,
    payment_of,
    refund_of,
    safe,
    text,
)

T = TypeVar("T")

STRIPE_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
SCAN_LIMIT = 1000  # list fallback: how many recent objects find_payment/find_refund look through
_PAGE = 100
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# What the SDK lets escape: its own errors, and aiohttp's raw ones while it reads a response body.
_TRANSPORT_ERRORS = (stripe.StripeError, aiohttp.ClientError, TimeoutError)


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
        payment = payment_of(intent.to_dict())
        if payment.status is GatewayPaymentStatus.FAILED:
            raise CardDeclined(payment.decline or generic_failure(), payment)
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
        captured = payment_of(data)
        if (
            opt_number(data, "amount_received") is None
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
        return payment_of(intent.to_dict())

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
        return refund_of(refund.to_dict())

    async def retrieve_payment(self, reference: str) -> GatewayPayment:
        intent = await self._call(
            "retrieve_payment",
            self._client.v1.payment_intents.retrieve_async(
                reference, {"expand": ["payment_method"]}
            ),
        )
        return payment_of(intent.to_dict())

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
        return None if found is None else payment_of(found)

    async def retrieve_refund(self, reference: str) -> GatewayRefund:
        refund = await self._call(
            "retrieve_refund", self._client.v1.refunds.retrieve_async(reference)
        )
        return refund_of(refund.to_dict())

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
                if obj(item, "metadata").get(REFUND_ID_KEY) == refund_id:
                    return refund_of(item)
            if not page.has_more or not items:
                return None
            starting_after = text(items[-1], "id")
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
        return max(items, key=lambda item: opt_number(item, "created") or 0, default=None)

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
                if obj(item, "metadata").get(PAYMENT_ID_KEY) == payment_id:
                    return item
            if not page.has_more or not items:
                return None
            starting_after = text(items[-1], "id")
        return None


# -- error translation -------------------------------------------------------------------------


def _translate(exc: BaseException, operation: str) -> GatewayError:
    where = f"stripe {operation}"
    if isinstance(exc, stripe.StripeError):
        where += f" ({type(exc).__name__}, http {exc.http_status}, code {exc.code}"
        where += f", request {exc.request_id})" if exc.request_id else ")"
    if isinstance(exc, stripe.CardError):
        decline = _decline_of(exc)
        intent = obj(_error_data(exc), "payment_intent")
        payment = payment_of(intent, decline) if intent else None
        return CardDeclined(decline, payment)
    if isinstance(exc, stripe.InvalidRequestError):
        if _names_missing_payment_method(exc, operation):
            return InvalidPaymentMethod(f"{where}: no such payment method")
        return GatewayRejected(f"{where}: {safe(exc.user_message)}")
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
        decline_code=opt_text(data, "decline_code"),
        message=safe(exc.user_message or "Your card was declined."),
    )


def _error_data(exc: stripe.StripeError) -> Json:
    body = exc.json_body
    return obj(body, "error") if isinstance(body, Mapping) else {}
