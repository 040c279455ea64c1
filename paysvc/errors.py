"""One error hierarchy for the whole service; rendered by one middleware and one CLI helper."""

from __future__ import annotations

from typing import Any


class PaysvcError(Exception):
    """A business error with the contract's type, code and HTTP status."""

    type = "api_error"
    code = "api_error"
    http_status = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        http_status: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        self.param = param
        self.extra: dict[str, Any] = extra or {}
        # (resource type, id) when this error hides a resource the actor may not touch.
        self.denied: tuple[str, str] | None = None

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        """The contract's `error` object."""
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "request_id": request_id,
            **self.extra,
        }


class InvalidRequest(PaysvcError):
    type = "invalid_request_error"
    code = "parameter_invalid"
    http_status = 422


class MalformedRequest(InvalidRequest):
    code = "malformed_request"
    http_status = 400


class AuthenticationFailed(PaysvcError):
    type = "authentication_error"
    code = "authentication_required"
    http_status = 401


class PermissionDenied(PaysvcError):
    type = "permission_error"
    code = "forbidden"
    http_status = 403


class NotFound(PaysvcError):
    type = "not_found"
    code = "resource_missing"
    http_status = 404


class StateConflict(PaysvcError):
    type = "state_conflict"
    code = "invalid_state_transition"
    http_status = 409


class IdempotencyError(PaysvcError):
    type = "idempotency_error"
    code = "idempotency_key_reused"
    http_status = 422


class CardError(PaysvcError):
    type = "card_error"
    code = "card_declined"
    http_status = 402


class RateLimited(PaysvcError):
    type = "rate_limit_error"
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(PaysvcError):
    """The database cannot be reached: nothing was done; retry after `retry_after` seconds."""

    code = "service_unavailable"
    http_status = 503

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GatewayUnavailableError(PaysvcError):
    type = "gateway_error"
    code = "gateway_unavailable"
    http_status = 503


class ConfigError(PaysvcError):
    """A missing or malformed setting; stops start-up with one line naming the variable."""

    code = "config_error"

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
