"""Slow clients against a real server over real sockets: headers and body must arrive within
REQUEST_TIMEOUT (408 and the connection closed for a body), one client IP holds at most
MAX_CONNECTIONS_PER_IP connections, others are served meanwhile, and each aborted client is one
log line without a traceback. The deadline is short here; every wait for the server is bounded
by a generous limit, never a fixed sleep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from paysvc.bootstrap import build_container
from paysvc.web import slowclients
from paysvc.web.app import create_app
from tests.conftest import CUSTOMER, make_settings
from tests.security.helpers import captured_logs, log_lines

TIMEOUT = "1"  # REQUEST_TIMEOUT for these tests
PATIENCE = 120.0  # how long a test waits for the server to act before failing
HEADERS = (
    "POST /payments/intents HTTP/1.1\r\nHost: paysvc\r\n"
    f"Authorization: {CUSTOMER['Authorization']}\r\n"
    "Content-Type: application/json\r\n"
)


@pytest.fixture
async def server(database_url: str) -> AsyncIterator[int]:
    settings = make_settings(database_url, REQUEST_TIMEOUT=TIMEOUT, MAX_CONNECTIONS_PER_IP="3")
    container = build_container(settings)
    runner, sockets = await slowclients.start(
        create_app(container, own_container=False),
        "127.0.0.1",
        0,
        request_timeout=settings.request_timeout,
        max_connections_per_ip=settings.max_connections_per_ip,
    )
    try:
        yield sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()
        await container.close()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), timeout=PATIENCE)


async def served(port: int) -> dict[str, Any]:
    """An ordinary, complete request on a fresh connection."""
    reader, writer = await connect(port)
    body = json.dumps({"order_id": "ok", "amount": 1999, "currency": "usd"})
    writer.write(
        f"{HEADERS}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}".encode()
    )
    raw = await until_closed(reader)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201"), raw[:200]
    result: dict[str, Any] = json.loads(payload)
    return result


def aborted(lines: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("reason") == reason]


async def test_a_slow_body_gets_408_and_the_connection_closed(server: int) -> None:
    with captured_logs() as logs:
        reader, writer = await connect(server)
        writer.write(f'{HEADERS}Content-Length: 100\r\n\r\n{{"order_'.encode())  # then nothing
        raw = await until_closed(reader)
        writer.close()
        assert (await served(server))["status"] == "pending"
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert b"Connection: close" in head
    error = json.loads(payload)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")
    lines = log_lines(logs)
    [line] = aborted(lines, "body_timeout")
    assert line["level"] == "warning" and line["client"] == "127.0.0.1"
    assert not any("exc" in entry or "Traceback" in json.dumps(entry) for entry in lines)


async def test_slow_headers_are_cut_and_idle_connections_close_quietly(server: int) -> None:
    with captured_logs() as logs:
        slow_reader, slow_writer = await connect(server)
        slow_writer.write(b"POST /payments/intents HTTP/1.1\r\nHost: pay")  # never finished
        idle_reader, idle_writer = await connect(server)  # sends nothing at all
        assert await until_closed(slow_reader) == b""  # closed without an answer
        assert await until_closed(idle_reader) == b""
        slow_writer.close()
        idle_writer.close()
    lines = log_lines(logs)
    assert len(aborted(lines, "header_timeout")) == 1  # the partial one only
    assert not any("exc" in entry for entry in lines)


async def test_connections_per_ip_are_capped_and_others_are_served(server: int) -> None:
    with captured_logs() as logs:
        held = [await connect(server) for _ in range(2)]
        for _, writer in held:
            writer.write(f"{HEADERS}Content-Length: 50\r\n\r\n{{".encode())  # a slow body
        # Under the cap: an ordinary request is served while the slow ones hang.
        assert (await served(server))["status"] == "pending"
        third = await connect(server)
        third[1].write(b"GET /health HTTP/1.1\r\nHo")  # slow headers: three now held
        extra_reader, extra_writer = await connect(server)  # the fourth: over the cap
        assert await until_closed(extra_reader) == b""
        extra_writer.close()
        for reader, writer in [*held, third]:
            await until_closed(reader)  # the deadline frees them
            writer.close()
        assert (await served(server))["status"] == "pending"  # and the address may come back
    lines = log_lines(logs)
    [capped] = aborted(lines, "connection_cap")
    assert (capped["client"], capped["cap"]) == ("127.0.0.1", 3)
    assert len(aborted(lines, "body_timeout")) == 2
    assert len(aborted(lines, "header_timeout")) == 1
    assert not any("exc" in entry for entry in lines)


async def test_a_client_that_goes_away_mid_body_is_one_line(server: int) -> None:
    with captured_logs() as logs:
        for _ in range(3):
            _, writer = await connect(server)
            writer.write(f'{HEADERS}Content-Length: 100\r\n\r\n{{"order_'.encode())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        assert (await served(server))["status"] == "pending"  # after the three went away
        deadline = asyncio.get_running_loop().time() + PATIENCE
        while len(aborted(log_lines(logs), "client_gone")) < 3:
            assert asyncio.get_running_loop().time() < deadline, logs.getvalue()
            await asyncio.sleep(0.05)
    lines = log_lines(logs)
    assert len(aborted(lines, "client_gone")) == 3
    assert not any("exc" in entry or entry["level"] == "error" for entry in lines)
