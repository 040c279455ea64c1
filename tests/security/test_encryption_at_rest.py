"""Encryption at rest, seen from outside: raw database bytes hold no personal data; tampered,
moved or foreign ciphertexts fail loudly (500 api_error, an error log line), never as garbage;
bad keys stop start-up."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from paysvc.bootstrap import Container
from tests.conftest import CUSTOMER, SERVICE, Api
from tests.security.helpers import captured_logs, client_with, error_lines, paysvc, raw_database

EMAIL = "carol.receipts@example.org"
DESCRIPTION = "Blue ceramic teapot, gift wrapped"
META = {"loyalty_tier_note": "platinum-7731", "gift_message": "happy birthday grandma"}
REFUND_META = {"ticket": "support-case-559812"}
OTHER_KEY = base64.b64encode(b"w" * 32).decode()


async def execute(container: Container, sql: str, **params: object) -> None:
    async def work(session: AsyncSession) -> None:
        await session.execute(text(sql), params)

    await container.db.run(work)


async def test_raw_database_holds_no_personal_data(api: Api, database_url: str) -> None:
    pending = await api.create(
        receipt_email=EMAIL,
        description=DESCRIPTION,
        metadata=META,
        payment_method="pm_card_mastercard",
    )
    paid = await api.paid(receipt_email=EMAIL, description=DESCRIPTION, metadata=META)
    await api.post(
        f"/payments/{paid['id']}/refunds", {"amount": 100, "metadata": REFUND_META}, SERVICE, 201
    )
    assert (await api.get(f"/payments/{pending['id']}"))["metadata"] == META  # reads back

    stored = await raw_database(database_url)
    assert pending["id"].encode() in stored  # the rows are there...
    secrets = [EMAIL, DESCRIPTION, *META, *META.values(), *REFUND_META.values()]
    for value in [*secrets, "pm_card_mastercard"]:  # ...but none of these in clear
        assert value.encode() not in stored, value
    assert b"carol" not in stored and b"teapot" not in stored


async def swap_descriptions(container: Container, first: str, second: str) -> None:
    async def work(session: AsyncSession) -> None:
        select = text("SELECT description_enc FROM payments WHERE id = :id")
        a = await session.scalar(select, {"id": first})
        b = await session.scalar(select, {"id": second})
        update = text("UPDATE payments SET description_enc = :v WHERE id = :id")
        await session.execute(update, {"v": b, "id": first})
        await session.execute(update, {"v": a, "id": second})

    await container.db.run(work)


async def assert_fails_loudly(api: Api, payment_id: str, problem: str) -> None:
    with captured_logs() as logs:
        response = await api.client.get(f"/payments/{payment_id}", headers=CUSTOMER)
        body = await response.json()
    assert response.status == 500
    assert body["error"]["type"] == "api_error"
    assert body["error"]["message"] == "An unexpected error occurred"
    assert DESCRIPTION not in str(body)
    assert problem in logs.getvalue()  # the operator's log says what is wrong
    assert body["error"]["request_id"] in logs.getvalue()


async def test_ciphertext_swapped_between_rows_fails_loudly(api: Api, container: Container) -> None:
    first = await api.create(description=DESCRIPTION)
    second = await api.create(order_id="2", description="another description")
    await swap_descriptions(container, first["id"], second["id"])
    for payment in (first, second):
        await assert_fails_loudly(api, payment["id"], "value does not decrypt")


@pytest.mark.parametrize("column", ["description_enc", "meta_enc", "receipt_email_enc"])
async def test_flipped_byte_fails_loudly(api: Api, container: Container, column: str) -> None:
    payment = await api.create(description=DESCRIPTION, metadata=META, receipt_email=EMAIL)

    async def envelope(session: AsyncSession) -> str:
        value = await session.scalar(
            text(f"SELECT {column} FROM payments WHERE id = :id"),  # noqa: S608 (fixed names)
            {"id": payment["id"]},
        )
        assert isinstance(value, str)
        return value

    head, payload = (await container.db.run(envelope, write=False)).rsplit(":", 1)
    raw = bytearray(base64.b64decode(payload))
    raw[len(raw) // 2] ^= 0x01
    tampered = f"{head}:{base64.b64encode(bytes(raw)).decode()}"
    update = f"UPDATE payments SET {column} = :v WHERE id = :id"  # noqa: S608 (fixed names)
    await execute(container, update, v=tampered, id=payment["id"])
    await assert_fails_loudly(api, payment["id"], "value does not decrypt")


async def test_wrong_key_never_yields_garbage(
    api: Api, aiohttp_client: Callable[..., Any], database_url: str
) -> None:
    payment = await api.create(description=DESCRIPTION)
    wrong = await client_with(aiohttp_client, database_url, ENCRYPTION_KEY=OTHER_KEY)
    with captured_logs() as logs:
        response = await wrong.get(f"/payments/{payment['id']}", headers=CUSTOMER)
        body = await response.json()
    assert (response.status, body["error"]["type"]) == (500, "api_error")
    assert "to decrypt this value" in logs.getvalue()


async def test_serve_refuses_a_wrong_key(api: Api, database_url: str) -> None:
    await api.create(description=DESCRIPTION)
    result = await paysvc(database_url, "serve", "--port", "1", ENCRYPTION_KEY=OTHER_KEY)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ENCRYPTION_KEY cannot decrypt stored data (key id ")
    assert "wrong key?" in lines[0]


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("ENCRYPTION_KEY", base64.b64encode(b"short").decode(), "must be 32 bytes"),
        ("ENCRYPTION_KEY", "not base64 at all!", "must be 32 random bytes, base64-encoded"),
        ("ENCRYPTION_KEYS_RETIRED", "c2hvcnQ=", "must be 32 bytes"),
    ],
)
async def test_serve_refuses_a_malformed_key(
    database_url: str, variable: str, value: str, problem: str
) -> None:
    result = await paysvc(database_url, "serve", "--port", "1", **{variable: value})
    assert result.exit_code == 1
    assert " ".join(error_lines(result)).startswith(f"error: configuration: {variable}: {problem}")
    assert value not in result.output  # a key is never echoed
