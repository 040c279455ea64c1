"""Settings: one frozen object built from the environment and validated at start."""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from paysvc.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///./payment_service.db"
EVENT_DESTINATIONS = ("order", "notification", "order-status")

Getter = Callable[[str], str | None]
N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Timing:
    """Every deadline of the money ledger, derived from one setting (`OPERATION_STALE_SECONDS`)
    and checked for the one order that keeps them safe:

    gateway timeout < operation stale window < idempotency take-over < background stuck age.

    A call still running can never be taken for a stuck one: the completer asks about an
    operation only once its call must have ended; a client retry re-attaches only after that;
    the background pass leaves fresh work to the client's own retry."""

    gateway_timeout: dt.timedelta
    operation_stale: dt.timedelta
    idempotency_takeover: dt.timedelta
    stuck_after: dt.timedelta

    @classmethod
    def derive(cls, gateway_timeout_seconds: float, stale_seconds: float) -> Timing:
        if not gateway_timeout_seconds < stale_seconds:
            raise ConfigError(
                "STRIPE_TIMEOUT_SECONDS",
                f"must be below OPERATION_STALE_SECONDS ({stale_seconds:g}): a call still "
                "running would be taken for a lost one",
            )
        return cls(
            gateway_timeout=dt.timedelta(seconds=gateway_timeout_seconds),
            operation_stale=dt.timedelta(seconds=stale_seconds),
            idempotency_takeover=dt.timedelta(seconds=stale_seconds * 4 / 3),
            stuck_after=dt.timedelta(seconds=stale_seconds * 2),
        )


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    jwt_secret_key: str
    jwt_issuer: str | None
    jwt_audience: str | None
    auth_mode: str
    auth_service_url: str
    order_service_url: str
    notification_service_url: str | None
    payment_gateways: tuple[str, ...]
    stripe_secret_key: str | None
    stripe_webhook_secrets: tuple[str, ...]
    stripe_api_base: str | None
    stripe_timeout_seconds: float
    encryption_key: bytes
    encryption_keys_retired: tuple[bytes, ...]
    encryption_keys_next: tuple[bytes, ...]
    pci_compliance_mode: str
    host: str
    port: int
    tls_cert_file: str | None
    tls_key_file: str | None
    rate_limit_per_second: float
    rate_limit_burst: int
    reconcile_interval: float = 30.0  # seconds between background passes; 0 turns it off
    events_signing_secrets: tuple[str, ...] = ()  # whsec_…; the first signs, all sign
    events_destinations: tuple[str, ...] = ("order", "notification")
    order_service_token: str | None = None
    order_validation: str = "off"
    order_payable_statuses: tuple[str, ...] = ("pending", "confirmed")
    log_level: str = "INFO"
    rate_limit_storage_url: str | None = None  # redis://…: buckets shared by every instance
    operation_stale_seconds: float = 45.0
    request_timeout: float = 10.0  # seconds to receive a request's headers, then its body
    max_connections_per_ip: int = 100  # concurrent connections of one client IP; 0 = no cap
    # Where browsers reach this service (the sandbox's 3-D Secure page links to it).
    public_url: str = "http://localhost:8009"

    @property
    def timing(self) -> Timing:
        return Timing.derive(self.stripe_timeout_seconds, self.operation_stale_seconds)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            return env_value(env, name)

        database_url = get("DATABASE_URL") or DEFAULT_DATABASE_URL
        scheme = urlsplit(database_url).scheme.split("+")[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ConfigError("DATABASE_URL", "must be a sqlite:// or postgresql:// URL")
        sqlite_dir = _sqlite_dir(database_url)

        jwt_secret = get("JWT_SECRET_KEY") or _generated_secret(
            sqlite_dir, "JWT_SECRET_KEY", ".paysvc-jwt-secret", lambda: secrets.token_urlsafe(48)
        )
        if len(jwt_secret) < 32:
            raise ConfigError("JWT_SECRET_KEY", "must be at least 32 characters")

        key_text = get("ENCRYPTION_KEY") or _generated_secret(
            sqlite_dir,
            "ENCRYPTION_KEY",
            ".paysvc-encryption-key",
            lambda: base64.b64encode(secrets.token_bytes(32)).decode(),
        )
        encryption_key = parse_key("ENCRYPTION_KEY", key_text)
        retired, upcoming = (
            tuple(parse_key(name, part) for part in (get(name) or "").split(",") if part.strip())
            for name in ("ENCRYPTION_KEYS_RETIRED", "ENCRYPTION_KEYS_NEXT")
        )

        auth_mode = _choice(get, "AUTH_MODE", "local", ("local", "remote"))
        stripe_key = get("STRIPE_SECRET_KEY")
        gateway_text = get("PAYMENT_GATEWAY") or ("stripe" if stripe_key else "sandbox")
        gateways = tuple(part.strip().lower() for part in gateway_text.split(",") if part.strip())
        if not gateways or any(g not in ("sandbox", "stripe") for g in gateways):
            raise ConfigError(
                "PAYMENT_GATEWAY", "must be sandbox, stripe or a list like stripe,sandbox"
            )
        if len(set(gateways)) != len(gateways):
            raise ConfigError("PAYMENT_GATEWAY", "lists a gateway twice")
        if "stripe" in gateways and not stripe_key:
            raise ConfigError("STRIPE_SECRET_KEY", "is required when PAYMENT_GATEWAY uses stripe")

        events_secrets = tuple(
            parse_webhook_secret("EVENTS_SIGNING_SECRET", part.strip())
            for part in (
                get("EVENTS_SIGNING_SECRET")
                or _generated_secret(
                    sqlite_dir, "EVENTS_SIGNING_SECRET", ".paysvc-events-secret", new_webhook_secret
                )
            ).split(",")
            if part.strip()
        )
        destinations = tuple(
            part.strip().lower()
            for part in (get("EVENTS_DESTINATIONS") or "order,notification").split(",")
            if part.strip()
        )
        if any(d not in EVENT_DESTINATIONS for d in destinations):
            raise ConfigError(
                "EVENTS_DESTINATIONS", f"must list some of {', '.join(EVENT_DESTINATIONS)}"
            )
        order_token = get("ORDER_SERVICE_TOKEN")
        if "order-status" in destinations and not order_token:
            raise ConfigError(
                "ORDER_SERVICE_TOKEN", "is required when EVENTS_DESTINATIONS lists order-status"
            )
        payable = tuple(
            part.strip().lower()
            for part in (get("ORDER_PAYABLE_STATUSES") or "pending,confirmed").split(",")
            if part.strip()
        )
        if not payable:
            raise ConfigError("ORDER_PAYABLE_STATUSES", "must list at least one status")

        port = _number(get, "PORT", "8009", int, 1, 65535)
        tls_cert, tls_key = get("TLS_CERT_FILE"), get("TLS_KEY_FILE")
        if bool(tls_cert) != bool(tls_key):
            raise ConfigError(
                "TLS_KEY_FILE" if tls_cert else "TLS_CERT_FILE", "set both or neither"
            )

        stripe_timeout = _number(get, "STRIPE_TIMEOUT_SECONDS", "20", float, 0.1, 120.0)
        stale = _number(get, "OPERATION_STALE_SECONDS", "45", float, 0.5, 3600.0)
        Timing.derive(stripe_timeout, stale)  # refuse a configuration that breaks the order

        return cls(
            database_url=database_url,
            jwt_secret_key=jwt_secret,
            jwt_issuer=get("JWT_ISSUER"),
            jwt_audience=get("JWT_AUDIENCE"),
            auth_mode=auth_mode,
            auth_service_url=_url(get, "AUTH_SERVICE_URL", "http://localhost:8001"),
            order_service_url=_url(get, "ORDER_SERVICE_URL", "http://localhost:8008"),
            notification_service_url=(
                _url(get, "NOTIFICATION_SERVICE_URL", "")
                if get("NOTIFICATION_SERVICE_URL")
                else None
            ),
            payment_gateways=gateways,
            stripe_secret_key=stripe_key,
            stripe_webhook_secrets=tuple(
                s.strip() for s in (get("STRIPE_WEBHOOK_SECRET") or "").split(",") if s.strip()
            ),
            stripe_api_base=get("STRIPE_API_BASE") and _url(get, "STRIPE_API_BASE", ""),
            stripe_timeout_seconds=stripe_timeout,
            encryption_key=encryption_key,
            encryption_keys_retired=retired,
            encryption_keys_next=upcoming,
            pci_compliance_mode=_choice(
                get, "PCI_COMPLIANCE_MODE", "strict", ("strict", "permissive")
            ),
            host=get("HOST") or "0.0.0.0",  # noqa: S104 - a service listens on all interfaces
            port=port,
            tls_cert_file=_existing_file("TLS_CERT_FILE", tls_cert),
            tls_key_file=_existing_file("TLS_KEY_FILE", tls_key),
            rate_limit_per_second=_number(get, "RATE_LIMIT_PER_SECOND", "100", float, 0.001, 1e9),
            rate_limit_burst=_number(get, "RATE_LIMIT_BURST", "200", int, 1, 10**9),
            reconcile_interval=_number(get, "RECONCILE_INTERVAL", "30", float, 0.0, 86400.0),
            events_signing_secrets=events_secrets,
            events_destinations=destinations,
            order_service_token=order_token,
            order_validation=_choice(get, "ORDER_VALIDATION", "off", ("off", "strict")),
            order_payable_statuses=payable,
            log_level=_choice(get, "LOG_LEVEL", "info", LOG_LEVELS).upper(),
            rate_limit_storage_url=_storage_url(get("RATE_LIMIT_STORAGE_URL")),
            operation_stale_seconds=stale,
            request_timeout=_number(get, "REQUEST_TIMEOUT", "10", float, 0.05, 3600.0),
            max_connections_per_ip=_number(get, "MAX_CONNECTIONS_PER_IP", "100", int, 0, 10**6),
            public_url=_url(get, "PUBLIC_URL", _default_public_url(port, bool(tls_cert))),
        )


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """`NAME` from the environment, or the contents of the file `NAME_FILE` names (Docker and
    Kubernetes secrets: `JWT_SECRET_KEY_FILE=/run/secrets/jwt`); blank counts as unset. Works
    for every setting; setting both is an error (which one would win is not obvious)."""
    value = env.get(name)
    value = value.strip() if value is not None and value.strip() else None
    file_name = env.get(f"{name}_FILE", "").strip()
    if not file_name:
        return value
    if value is not None:
        raise ConfigError(name, f"set {name} or {name}_FILE, not both")
    try:
        text = Path(file_name).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"{name}_FILE", f"cannot read the file: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}_FILE", "the file is not UTF-8 text") from None
    return text or None


def _storage_url(url: str | None) -> str | None:
    if url is None:
        return None
    if urlsplit(url).scheme not in ("redis", "rediss", "redis+unix", "memory"):
        raise ConfigError(
            "RATE_LIMIT_STORAGE_URL", "must be a redis://, rediss:// or memory:// URL"
        )
    return url


def _default_public_url(port: int, tls: bool) -> str:
    return f"{'https' if tls else 'http'}://localhost:{port}"


def parse_key(variable: str, text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise ConfigError(variable, "must be 32 random bytes, base64-encoded") from None
    if len(raw) != 32:
        raise ConfigError(variable, f"must be 32 bytes once decoded (got {len(raw)})")
    return raw


def new_webhook_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + 32 random bytes, base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def parse_webhook_secret(variable: str, text: str) -> str:
    """`whsec_<base64 of 24 to 64 bytes>` (the Standard Webhooks format)."""
    body = text.removeprefix("whsec_")
    try:
        raw = base64.b64decode(body, validate=True)
    except ValueError:
        raw = b""
    if not text.startswith("whsec_") or not 24 <= len(raw) <= 64:
        raise ConfigError(variable, "must be whsec_ followed by 24 to 64 random bytes, base64")
    return text


def sqlite_path(url: str) -> Path | None:
    """The SQLite database file of `url`, or None for other databases/in-memory."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().resolve()


def _sqlite_dir(url: str) -> Path | None:
    """The directory holding a SQLite database file, or None for other databases/in-memory."""
    path = sqlite_path(url)
    return None if path is None else path.parent


def _generated_secret(
    directory: Path | None, variable: str, filename: str, make: Callable[[], str]
) -> str:
    if directory is None:
        raise ConfigError(
            variable, "is required with a non-SQLite DATABASE_URL (generated secrets are refused)"
        )
    path = directory / filename
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        # Written whole under a private name (mkstemp: 0600), then linked into place: of two
        # processes starting at once, one wins the link and the other reads its complete file.
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f"{filename}.")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(str(make()) + "\n")
            os.link(temp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temp)
    return path.read_text().strip()


def _choice(get: Getter, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (get(name) or default).lower()
    if value not in allowed:
        raise ConfigError(name, f"must be one of {', '.join(allowed)}")
    return str(value)


def _url(get: Getter, name: str, default: str) -> str:
    value = str(get(name) or default)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(name, "must be an http(s) URL")
    return value.rstrip("/")


def _number(get: Getter, name: str, default: str, kind: type[N], low: N, high: N) -> N:
    text = str(get(name) or default)
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {text!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}")
    return value


def _existing_file(name: str, path: str | None) -> str | None:
    if path is not None and not Path(path).is_file():
        raise ConfigError(name, "file does not exist")
    return path
