"""Fixtures for the gateway tests: a real localstripe process, and tiny fake Stripe servers."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from paysvc.gateways.base import ChargeRequest
from paysvc.gateways.stripe import StripeGateway

TEST_KEY = "sk_test_paysvc_localstripe"

# localstripe as a subprocess, bound to 127.0.0.1 only, with its pickle persistence switched off:
# `python -m localstripe` listens on every interface and rewrites /tmp/localstripe.pickle (shared
# by every localstripe on the machine) after each change. Otherwise it is the unmodified server.
_LAUNCHER = """
import sys
import tempfile
from aiohttp import web
from localstripe import resources, server
resources.Store.dump_to_disk = lambda self: None
web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: it can never fill up and block
        process = subprocess.Popen(  # noqa: S603  # our own interpreter and launcher
            [sys.executable, "-c", _LAUNCHER, str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    request = urllib.request.Request(  # noqa: S310  # http://127.0.0.1 only
        f"{url}/v1/balance", headers={"Authorization": f"Bearer {TEST_KEY}"}
    )
    deadline = time.monotonic() + 180  # polled: generous for a loaded machine
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"localstripe exited: {log.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError("localstripe did not start within 180 s")


@pytest.fixture
async def stripe_gateway(localstripe_url: str) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(TEST_KEY, api_base=localstripe_url, timeout_seconds=10)
    yield gateway
    await gateway.close()


_counter = iter(range(1, 1_000_000))


def charge_request(**overrides: Any) -> ChargeRequest:
    """A charge for a fresh payment id (ids are unique per test session)."""
    n = next(_counter)
    values: dict[str, Any] = {
        "payment_id": f"pay_test{n:06d}{time.time_ns() % 10**9:09d}",
        "order_id": f"order-{n}",
        "amount": 1999,
        "currency": "usd",
        "capture_method": "automatic",
        "payment_method": "pm_card_visa",
        "idempotency_key": f"idem-{n}-{time.time_ns()}",
    }
    values.update(overrides)
    return ChargeRequest(**values)


# -- a tiny fake Stripe, for what localstripe lacks and for failure modes ---------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    query: dict[str, str]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class FakeStripe:
    """Routes are set per test: `fake.on("POST", "/v1/payment_intents", handler)`."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)

    def on(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def reply(self, method: str, path: str, body: dict[str, Any], status: int = 200) -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.json_response(body, status=status)

        self.on(method, path, handler)

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                form={k: str(v) for k, v in form.items()},
                query=dict(request.query),
            )
        )
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            error = {"error": {"type": "invalid_request_error", "message": "Unrecognized URL"}}
            return web.json_response(error, status=404)
        return await handler(request)


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.dispatch)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


@pytest.fixture
async def fake_gateway(fake_stripe: FakeStripe) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(TEST_KEY, api_base=fake_stripe.url, timeout_seconds=2)
    yield gateway
    await gateway.close()


def intent_json(**overrides: Any) -> dict[str, Any]:
    """A PaymentIntent as real Stripe returns it (the fields we read)."""
    body: dict[str, Any] = {
        "id": "pi_fake123",
        "object": "payment_intent",
        "amount": 1999,
        "amount_capturable": 0,
        "amount_received": 1999,
        "currency": "usd",
        "status": "succeeded",
        "created": 1_790_000_000,
        "metadata": {},
        "last_payment_error": None,
        "payment_method": {
            "id": "pm_123",
            "object": "payment_method",
            "type": "card",
            "card": {"brand": "mastercard", "last4": "4444", "exp_month": 3, "exp_year": 2031},
        },
    }
    body.update(overrides)
    return body
