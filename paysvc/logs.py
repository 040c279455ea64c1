"""Structured JSON logs on stderr, with the request id, and never a secret.

`configure_logging(level)` installs one handler on the root logger that writes one JSON object
per line: `time`, `level`, `logger`, `message`, `request_id` (when set in `request_id_var`, which
the request-id middleware sets per request), `exc` (exception text), plus any `extra={...}`
fields. A `RedactingFilter` on that handler masks bearer tokens, JWTs, Stripe secrets, emails,
card numbers and Authorization values in the message, its args, the exception text and extras,
before any handler formats the record.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from typing import Any, TextIO

from paysvc.web.pci import MIN_PAN_DIGITS, card_number_spans

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "paysvc_request_id", default=None
)

# The payment an operation is about: set by the payment, refund, admin and reconcile services
# when they start on one, added to every log line (`payment_id`) until the request ends.
payment_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "paysvc_payment_id", default=None
)

REDACTED = "[REDACTED]"

# (pattern, replacement). Order matters: header-shaped values first, then free-floating tokens.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: Bearer xyz / "authorization": "Basic xyz" / authorization=xyz
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|basic|token|digest)\s+)?[^\s\"',;}]+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*"), r"\1 " + REDACTED),
    # JWTs (also a lone header or a truncated token)
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){0,2}"), REDACTED),
    # Stripe secret and restricted keys, webhook signing secrets
    (re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9_]+"), REDACTED),
    (re.compile(r"\b(?:whsec|rk)_[A-Za-z0-9_]+"), REDACTED),
    # password=..., "api_key": "...", client_secret=..., secret: ...
    (
        re.compile(
            r"(?i)\b((?:password|passwd|secret|client_secret|api[_-]?key|access[_-]?token"
            r"|refresh[_-]?token)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}&]+"
        ),
        r"\1" + REDACTED,
    ),
    (
        re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"),
        "[EMAIL]",
    ),
)


# What every rule above needs to match (case-insensitive, so a superset): a text without any
# of these is left as it is without running the rules one by one. Most log text (every access
# line) is such.
_MAYBE_SECRET = re.compile(
    r"(?i)authorization|bearer|eyj|_live_|_test_|whsec_|rk_|passw|secret|api|token|@"
)


def redact(text: str) -> str:
    """Mask every secret, token, email address and card number in `text`."""
    if _MAYBE_SECRET.search(text) is not None:
        for pattern, replacement in _RULES:
            text = pattern.sub(replacement, text)
    spans = list(card_number_spans(text))
    for start, end in reversed(spans):
        text = text[:start] + "[CARD]" + text[end:]
    return text


_SHORTEST_PAN = 10 ** (MIN_PAN_DIGITS - 1)  # a smaller number has too few digits for a card


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= _SHORTEST_PAN:
            masked = redact(str(value))
            return value if masked == str(value) else masked
        return value
    return redact(repr(value))


# Attributes every LogRecord has; anything else on a record came from `extra={...}`.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "payment_id", "taskName"}
)


class RedactingFilter(logging.Filter):
    """Rewrites the record in place: message (with args merged), exception text, extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRS:
                setattr(record, name, _redact_value(value))
        # The request id (X-Request-Id) and the payment id (the path's `{id}`, set before the
        # payment is looked up) come from the client: masked like everything else.
        for name, var in (("request_id", request_id_var), ("payment_id", payment_id_var)):
            value = getattr(record, name, None) or var.get()
            if value:
                setattr(record, name, redact(str(value)))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        payment_id = getattr(record, "payment_id", None) or payment_id_var.get()
        if payment_id:
            entry["payment_id"] = payment_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRS and name not in entry:
                entry[name] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


_HANDLER_MARK = "_paysvc_handler"


def configure_logging(level: int | str = "INFO", stream: TextIO | None = None) -> logging.Handler:
    """Install the JSON handler (with redaction) on the root logger; safe to call again."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Nothing we write names a thread, a process or the caller's file and line: the logging
    # HOWTO's "Optimization" settings spare each record (every request logs one) finding them.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    return handler
