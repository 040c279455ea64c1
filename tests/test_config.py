"""Settings.from_env: every malformed value names its variable; generated secrets."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from paysvc.config import Settings
from paysvc.errors import ConfigError
from tests.conftest import ENCRYPTION_KEY, EVENTS_SECRET, JWT_SECRET


def env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    base = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/paysvc.db",
        "JWT_SECRET_KEY": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "EVENTS_SIGNING_SECRET": EVENTS_SECRET,
    }
    base.update(overrides)
    return base


BAD: list[tuple[dict[str, str], str]] = [
    ({"PORT": "abc"}, "PORT"),
    ({"PORT": "0"}, "PORT"),
    ({"PORT": "65536"}, "PORT"),
    ({"PORT": "80.5"}, "PORT"),
    ({"DATABASE_URL": "mysql://root@localhost/pay"}, "DATABASE_URL"),
    ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    ({"AUTH_MODE": "x"}, "AUTH_MODE"),
    ({"AUTH_SERVICE_URL": "localhost:8001"}, "AUTH_SERVICE_URL"),
    ({"ORDER_SERVICE_URL": "ftp://orders"}, "ORDER_SERVICE_URL"),
    ({"NOTIFICATION_SERVICE_URL": "nope"}, "NOTIFICATION_SERVICE_URL"),
    ({"EVENTS_SIGNING_SECRET": "plain-text"}, "EVENTS_SIGNING_SECRET"),
    ({"EVENTS_SIGNING_SECRET": "whsec_c2hvcnQ="}, "EVENTS_SIGNING_SECRET"),  # 5 bytes
    ({"EVENTS_DESTINATIONS": "order,email"}, "EVENTS_DESTINATIONS"),
    ({"EVENTS_DESTINATIONS": "order-status"}, "ORDER_SERVICE_TOKEN"),
    ({"ORDER_VALIDATION": "lenient"}, "ORDER_VALIDATION"),
    ({"PUBLIC_URL": "shop.example.com"}, "PUBLIC_URL"),
    ({"PAYMENT_GATEWAY": "paypal"}, "PAYMENT_GATEWAY"),
    ({"PAYMENT_GATEWAY": "sandbox,sandbox"}, "PAYMENT_GATEWAY"),
    ({"PAYMENT_GATEWAY": "stripe"}, "STRIPE_SECRET_KEY"),
    ({"PAYMENT_GATEWAY": "stripe,sandbox"}, "STRIPE_SECRET_KEY"),
    ({"ENCRYPTION_KEY": base64.b64encode(b"short").decode()}, "ENCRYPTION_KEY"),
    ({"ENCRYPTION_KEY": "not base64 at all!!"}, "ENCRYPTION_KEY"),
    ({"ENCRYPTION_KEYS_RETIRED": "bad!"}, "ENCRYPTION_KEYS_RETIRED"),
    ({"JWT_SECRET_KEY": "short"}, "JWT_SECRET_KEY"),
    ({"PCI_COMPLIANCE_MODE": "x"}, "PCI_COMPLIANCE_MODE"),
    ({"RATE_LIMIT_BURST": "0"}, "RATE_LIMIT_BURST"),
    ({"RATE_LIMIT_BURST": "many"}, "RATE_LIMIT_BURST"),
    ({"STRIPE_TIMEOUT_SECONDS": "0"}, "STRIPE_TIMEOUT_SECONDS"),
    ({"STRIPE_TIMEOUT_SECONDS": "soon"}, "STRIPE_TIMEOUT_SECONDS"),
    ({"RECONCILE_INTERVAL": "-1"}, "RECONCILE_INTERVAL"),
    ({"RATE_LIMIT_PER_SECOND": "0"}, "RATE_LIMIT_PER_SECOND"),
    ({"RATE_LIMIT_PER_SECOND": "nan"}, "RATE_LIMIT_PER_SECOND"),
    ({"TLS_CERT_FILE": "/no/such/cert.pem", "TLS_KEY_FILE": "/no/such/key.pem"}, "TLS_CERT_FILE"),
    ({"TLS_CERT_FILE": "/no/such/cert.pem"}, "TLS_KEY_FILE"),
    ({"TLS_KEY_FILE": "/no/such/key.pem"}, "TLS_CERT_FILE"),
    ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ({"RATE_LIMIT_STORAGE_URL": "http://redis:6379"}, "RATE_LIMIT_STORAGE_URL"),
    ({"ENCRYPTION_KEY_FILE": "/no/such/key"}, "ENCRYPTION_KEY"),  # set both: which one?
]


@pytest.mark.parametrize(("overrides", "variable"), BAD, ids=[f"{v}={o}" for o, v in BAD])
def test_bad_value_names_the_variable(
    tmp_path: Path, overrides: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(tmp_path, **overrides))
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert "\n" not in str(caught.value)


def test_tls_key_file_missing_is_named(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(tmp_path, TLS_CERT_FILE=str(cert), TLS_KEY_FILE=str(tmp_path / "k")))
    assert caught.value.variable == "TLS_KEY_FILE"


def test_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env(env(tmp_path))
    assert settings.port == 8009 and settings.host == "0.0.0.0"  # noqa: S104
    assert settings.auth_mode == "local" and settings.payment_gateways == ("sandbox",)
    assert settings.pci_compliance_mode == "strict"
    assert (settings.rate_limit_per_second, settings.rate_limit_burst) == (100.0, 200)
    assert settings.auth_service_url == "http://localhost:8001"
    assert settings.notification_service_url is None
    assert settings.encryption_key == b"k" * 32


def test_values_are_normalised(tmp_path: Path) -> None:
    settings = Settings.from_env(
        env(
            tmp_path,
            PORT=" 9000 ",
            AUTH_MODE="REMOTE",
            AUTH_SERVICE_URL="http://auth:8001/",
            PAYMENT_GATEWAY="Sandbox",
            STRIPE_WEBHOOK_SECRET="whsec_a, whsec_b",
        )
    )
    assert settings.port == 9000 and settings.auth_mode == "remote"
    assert settings.auth_service_url == "http://auth:8001"
    assert settings.payment_gateways == ("sandbox",)
    assert settings.stripe_webhook_secrets == ("whsec_a", "whsec_b")


def test_generated_secrets_beside_sqlite_are_0600_and_reused(tmp_path: Path) -> None:
    database = tmp_path / "data" / "paysvc.db"
    plain = {"DATABASE_URL": f"sqlite:///{database}"}
    first = Settings.from_env(plain)
    jwt_file = database.parent / ".paysvc-jwt-secret"
    key_file = database.parent / ".paysvc-encryption-key"
    events_file = database.parent / ".paysvc-events-secret"
    for path in (jwt_file, key_file, events_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.jwt_secret_key) >= 32
    assert len(first.encryption_key) == 32
    second = Settings.from_env(plain)
    assert second.jwt_secret_key == first.jwt_secret_key
    assert second.encryption_key == first.encryption_key
    (secret,) = first.events_signing_secrets
    assert secret.startswith("whsec_") and second.events_signing_secrets == (secret,)
    # Another database directory gets its own secrets.
    elsewhere = Settings.from_env({"DATABASE_URL": f"sqlite:///{tmp_path}/other/p.db"})
    assert elsewhere.jwt_secret_key != first.jwt_secret_key


def test_relative_sqlite_path_keeps_secrets_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Settings.from_env({})
    assert (tmp_path / ".paysvc-jwt-secret").exists()
    assert (tmp_path / ".paysvc-encryption-key").exists()


def test_explicit_secrets_are_not_written(tmp_path: Path) -> None:
    Settings.from_env(env(tmp_path))
    assert not list(tmp_path.glob(".paysvc-*"))


@pytest.mark.parametrize(
    "url", ["postgresql://postgres@db/pay", "postgresql+asyncpg://db/pay", "sqlite://"]
)
@pytest.mark.parametrize("missing", ["JWT_SECRET_KEY", "ENCRYPTION_KEY", "EVENTS_SIGNING_SECRET"])
def test_generated_secrets_refused_without_a_sqlite_file(
    tmp_path: Path, url: str, missing: str
) -> None:
    values = env(tmp_path, DATABASE_URL=url)
    del values[missing]
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(values)
    assert caught.value.variable == missing
    assert not list(tmp_path.glob(".paysvc-*"))


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    """`paysvc serve` and `paysvc token mint` started at once on a fresh directory: neither may
    crash on the other's file nor read it half-written (both happened before the fix)."""
    for trial in range(25):
        url = f"sqlite:///{tmp_path}/{trial}/paysvc.db"
        children = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                code = 0
                try:
                    settings = Settings.from_env({"DATABASE_URL": url})
                    (tmp_path / f"{trial}-{os.getpid()}").write_text(settings.jwt_secret_key)
                except BaseException:
                    code = 1
                os._exit(code)
            children.append(pid)
        assert [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children] == [0] * 4
        seen = {(tmp_path / f"{trial}-{pid}").read_text() for pid in children}
        assert len(seen) == 1
        assert sorted(p.name for p in (tmp_path / str(trial)).iterdir()) == [
            ".paysvc-encryption-key",
            ".paysvc-events-secret",
            ".paysvc-jwt-secret",
        ]


# -- `paysvc serve` stops with one line naming the variable -------------------------------------


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"PORT": "abc"}, "PORT"),
        ({"AUTH_MODE": "x"}, "AUTH_MODE"),
        ({"JWT_SECRET_KEY": "s"}, "JWT_SECRET_KEY"),
    ],
)
def test_serve_with_a_bad_setting_exits_1_with_one_line(
    tmp_path: Path, overrides: dict[str, str], variable: str
) -> None:
    result = CliRunner().invoke(app, ["serve"], env=env(tmp_path, **overrides))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "paysvc.db").exists()  # stopped before touching the database


def test_events_and_order_settings(tmp_path: Path) -> None:
    second = "whsec_" + base64.b64encode(b"s" * 24).decode()
    settings = Settings.from_env(
        env(
            tmp_path,
            EVENTS_SIGNING_SECRET=f"{EVENTS_SECRET}, {second}",
            EVENTS_DESTINATIONS="order, Order-Status",
            ORDER_SERVICE_TOKEN="svc-token",
            ORDER_VALIDATION="STRICT",
            ORDER_PAYABLE_STATUSES="PENDING, awaiting_payment",
        )
    )
    assert settings.events_signing_secrets == (EVENTS_SECRET, second)
    assert settings.events_destinations == ("order", "order-status")
    assert settings.order_validation == "strict"
    assert settings.order_payable_statuses == ("pending", "awaiting_payment")
    defaults = Settings.from_env(env(tmp_path))
    assert defaults.events_destinations == ("order", "notification")
    assert defaults.order_validation == "off"
    assert defaults.order_payable_statuses == ("pending", "confirmed")


def test_ledger_timing_comes_from_one_setting_in_order(tmp_path: Path) -> None:
    timing = Settings.from_env(env(tmp_path)).timing
    seconds = [
        t.total_seconds()
        for t in (
            timing.gateway_timeout,
            timing.operation_stale,
            timing.idempotency_takeover,
            timing.stuck_after,
        )
    ]
    assert seconds == [20, 45, 60, 90]
    scaled = Settings.from_env(env(tmp_path, OPERATION_STALE_SECONDS="90")).timing
    assert scaled.idempotency_takeover.total_seconds() == 120
    assert scaled.stuck_after.total_seconds() == 180


@pytest.mark.parametrize(
    "overrides",
    [
        {"STRIPE_TIMEOUT_SECONDS": "60"},  # longer than the default stale window (45 s)
        {"OPERATION_STALE_SECONDS": "20"},  # not longer than the default gateway timeout
    ],
)
def test_a_gateway_timeout_not_below_the_stale_window_refuses_to_start(
    tmp_path: Path, overrides: dict[str, str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(tmp_path, **overrides))
    assert caught.value.variable == "STRIPE_TIMEOUT_SECONDS"
    assert "OPERATION_STALE_SECONDS" in str(caught.value)


SECRET_SETTINGS = [
    ("JWT_SECRET_KEY", "j" * 40, "jwt_secret_key", "j" * 40),
    ("ENCRYPTION_KEY", ENCRYPTION_KEY, "encryption_key", base64.b64decode(ENCRYPTION_KEY)),
    ("STRIPE_SECRET_KEY", "sk_test_fromafile", "stripe_secret_key", "sk_test_fromafile"),
    ("STRIPE_WEBHOOK_SECRET", "whsec_a,whsec_b", "stripe_webhook_secrets", ("whsec_a", "whsec_b")),
    ("DATABASE_URL", "sqlite:///{tmp}/other.db", "database_url", "sqlite:///{tmp}/other.db"),
]


@pytest.mark.parametrize(("variable", "content", "field", "expected"), SECRET_SETTINGS)
def test_every_setting_can_come_from_a_file(
    tmp_path: Path, variable: str, content: str, field: str, expected: object
) -> None:
    """`NAME_FILE=/run/secrets/x` (Docker, Kubernetes): the file's content, trailing newline
    dropped, as if NAME were set to it."""
    secret = tmp_path / "secret"
    secret.write_text(content.format(tmp=tmp_path) + "\n")
    values = env(tmp_path, **{f"{variable}_FILE": str(secret)})
    values.pop(variable, None)
    if isinstance(expected, str):
        expected = expected.format(tmp=tmp_path)
    assert getattr(Settings.from_env(values), field) == expected


@pytest.mark.parametrize("path", ["/no/such/secret", "{tmp}"], ids=["missing", "a directory"])
def test_an_unreadable_secret_file_is_named(tmp_path: Path, path: str) -> None:
    values = env(tmp_path, JWT_SECRET_KEY_FILE=path.format(tmp=tmp_path))
    values.pop("JWT_SECRET_KEY")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(values)
    assert caught.value.variable == "JWT_SECRET_KEY_FILE"
    result = CliRunner().invoke(app, ["serve"], env=values)
    assert result.exit_code == 1
    assert "error: configuration: JWT_SECRET_KEY_FILE: cannot read" in result.stderr.strip()


def test_log_level_and_rate_limit_storage(tmp_path: Path) -> None:
    settings = Settings.from_env(
        env(tmp_path, LOG_LEVEL="debug", RATE_LIMIT_STORAGE_URL="redis://cache:6379/2")
    )
    assert (settings.log_level, settings.rate_limit_storage_url) == (
        "DEBUG",
        "redis://cache:6379/2",
    )
    defaults = Settings.from_env(env(tmp_path))
    assert (defaults.log_level, defaults.rate_limit_storage_url) == ("INFO", None)


def test_public_url_follows_port_and_tls_unless_set(tmp_path: Path) -> None:
    assert Settings.from_env(env(tmp_path, PORT="9000")).public_url == "http://localhost:9000"
    explicit = Settings.from_env(env(tmp_path, PUBLIC_URL="https://pay.example.com/"))
    assert explicit.public_url == "https://pay.example.com"
