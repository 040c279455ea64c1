"""A client generated from /openapi.json by openapi-python-client works against the service.

openapi-python-client is not in the project's lock (its typer pin conflicts with ours): it runs
as a separate tool through `uv tool run` (cached by uv after the first run). The generated
package's own dependencies (httpx, attrs, python-dateutil) are in the dev group.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import token

GENERATOR = "openapi-python-client==0.29.1"
ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "paysvc_generated_client"


def _uv() -> str | None:
    local = ROOT / "tools" / "uv-venv" / "bin" / "uv"
    return str(local) if local.exists() else shutil.which("uv")


async def _generate(spec: bytes, where: Path) -> None:
    uv = _uv()
    if uv is None:
        pytest.skip("uv is missing: cannot run openapi-python-client")
    (where / "openapi.json").write_bytes(spec)
    process = await asyncio.create_subprocess_exec(
        uv,
        "tool",
        "run",
        "--from",
        GENERATOR,
        "openapi-python-client",
        "generate",
        "--path",
        str(where / "openapi.json"),
        "--meta",
        "none",
        "--output-path",
        str(where / PACKAGE),
        cwd=where,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    offline = ("Failed to fetch", "Failed to download", "dns error", "Could not connect")
    if process.returncode != 0 and any(sign in text for sign in offline):
        pytest.skip(f"{GENERATOR} could not be installed (no package index?): {text[-300:]}")
    assert process.returncode == 0, text
    assert "Warning" not in text, text  # every part of the document was understood


@pytest.fixture
def generated(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_generated_client_pays_refunds_lists_and_reads_typed_errors(
    client: TestClient[Any, Any], generated: Path
) -> None:
    await _generate(await (await client.get("/openapi.json")).read(), generated)
    models = _module("models")
    create = _module("api.payments.post_payments_intents")
    confirm = _module("api.payments.post_payments_id_confirm")
    get = _module("api.payments.get_payments_id")
    listing = _module("api.payments.get_payments")
    refund = _module("api.refunds.post_payments_id_refunds")
    base = str(client.make_url("/")).rstrip("/")
    customer = _module("client").AuthenticatedClient(base_url=base, token=token("17"))
    service = _module("client").AuthenticatedClient(
        base_url=base, token=token("order-service", "service")
    )

    async with customer as me, service as orders:
        created = await create.asyncio_detailed(
            client=me,
            body=models.CreateIntentRequest(order_id="gen-1", amount=1999, currency="usd"),
            idempotency_key="gen-1-create",
        )
        assert created.status_code == 201
        payment = created.parsed
        assert isinstance(payment, models.Payment)
        assert payment.status == models.PaymentStatus.PENDING
        assert payment.payment_method is None and payment.failure is None

        paid = await confirm.asyncio(
            payment.id, client=me, body=models.ConfirmRequest(payment_method="pm_card_visa")
        )
        assert isinstance(paid, models.Payment)
        assert paid.status == models.PaymentStatus.CAPTURED
        assert paid.amount_captured == 1999
        assert isinstance(paid.payment_method, models.PaymentMethod)
        assert paid.payment_method.last4 == "4242"
        assert paid.created_at.tzinfo is not None  # parsed as an aware datetime

        refunded = await refund.asyncio_detailed(
            payment.id, client=orders, body=models.CreateRefundRequest(amount=500)
        )
        assert refunded.status_code == 201
        assert isinstance(refunded.parsed, models.Refund)
        assert refunded.parsed.status == models.RefundStatus.SUCCEEDED
        assert refunded.parsed.reason is None

        page = await listing.asyncio(client=me, order_id="gen-1")
        assert isinstance(page, models.PaymentList)
        assert [(p.id, p.status, p.amount_refunded) for p in page.data] == [
            (payment.id, models.PaymentStatus.PARTIALLY_REFUNDED, 500)
        ]
        assert page.has_more is False and page.next_cursor is None

        other = await create.asyncio(
            client=me, body=models.CreateIntentRequest(order_id="gen-2", amount=700, currency="eur")
        )
        assert isinstance(other, models.Payment)
        declined = await confirm.asyncio_detailed(
            other.id, client=me, body=models.ConfirmRequest(payment_method="pm_card_chargeDeclined")
        )
        assert declined.status_code == 402
        card_error = declined.parsed
        assert isinstance(card_error, models.Error)
        assert card_error.error.type_ == models.ErrorObjectType.CARD_ERROR
        assert card_error.error.code == "card_declined"
        assert isinstance(card_error.error.payment, models.Payment)
        assert card_error.error.payment.status == models.PaymentStatus.FAILED
        assert card_error.error.request_id == declined.headers["X-Request-Id"]

        missing = await get.asyncio_detailed("pay_doesnotexist", client=me)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.Error)
        assert missing.parsed.error.type_ == models.ErrorObjectType.NOT_FOUND
        assert missing.parsed.error.message == "No such payment"
