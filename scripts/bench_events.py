#!/usr/bin/env python3
"""Benchmark the outbox, bounded (a few hundred payments), in process:

1. the added latency of the outbox write on the payment path: create + confirm through the
   payment service with the outbox on, and with a do-nothing outbox (the ceiling), in the same
   run on fresh databases; prints p50/p95 per flow and the ratio;
2. the dispatcher's throughput: every delivery those flows wrote, sent to a local aiohttp
   receiver (signed, over one ClientSession) until none is pending; prints deliveries/s.

SQLite, plus PostgreSQL when PAYSVC_TEST_DATABASE_URL is set (a scratch database).

    .venv/bin/python scripts/bench_events.py [--flows 300] [--concurrency 20]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pg_scratch

from paysvc.auth.principal import Actor, Role
from paysvc.bootstrap import Container, build_container
from paysvc.config import Settings
from paysvc.db import migrate
from paysvc.events.dispatcher import Dispatcher, Endpoints
from paysvc.events.models import Event
from paysvc.events.outbox import Outbox
from paysvc.events.signing import Signer
from paysvc.payments.service import NewIntent
from paysvc.web.outbound import PlatformClient

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
CUSTOMER = Actor("17", Role.CUSTOMER)


class NoOutbox(Outbox):
    """The ceiling: the same payment path writing no events."""

    def record(self, *_args: Any, **_kwargs: Any) -> Event:
        return Event()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def settings(url: str, receiver: str) -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": url,
            "JWT_SECRET_KEY": secrets.token_urlsafe(48),
            "ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "EVENTS_SIGNING_SECRET": SECRET,
            "ORDER_SERVICE_URL": receiver,
            "NOTIFICATION_SERVICE_URL": receiver,
            "PAYMENT_GATEWAY": "sandbox",
        }
    )


async def flows(container: Container, count: int, concurrency: int, tag: str) -> list[float]:
    gate = asyncio.Semaphore(concurrency)
    times: list[float] = []

    async def flow(n: int) -> None:
        async with gate:
            started = time.perf_counter()
            payment = await container.payments.create_intent(
                CUSTOMER, NewIntent(order_id=f"{tag}-{n}", amount=1000 + n, currency="usd")
            )
            done = await container.payments.confirm(CUSTOMER, payment.id, "pm_card_visa")
            assert done.status == "captured"
            times.append(time.perf_counter() - started)

    await asyncio.gather(*(flow(-1 - n) for n in range(10)))  # warm up
    times.clear()
    await asyncio.gather(*(flow(n) for n in range(count)))
    return times


async def bench(urls: tuple[str, str], count: int, concurrency: int) -> dict[str, float]:
    received = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver = f"http://127.0.0.1:{port}"
    try:
        ceiling = build_container(settings(urls[0], receiver))
        ceiling.payments.outbox = NoOutbox(ceiling.clock, [])
        try:
            without = await flows(ceiling, count, concurrency, "ceiling")
        finally:
            await ceiling.close()
        container = build_container(settings(urls[1], receiver))
        client = PlatformClient(receiver)
        try:
            with_outbox = await flows(container, count, concurrency, "outbox")
            dispatcher = Dispatcher(
                container.db,
                container.clock,
                client,
                Signer([SECRET]),
                Endpoints(receiver, receiver, None),
            )
            started = time.perf_counter()
            pending = await dispatcher.deliver_due()
            elapsed = time.perf_counter() - started
        finally:
            await client.close()
            await container.close()
    finally:
        await runner.cleanup()
    assert received == pending, (received, pending)
    return {
        "without_p50": 1000 * statistics.median(without),
        "without_p95": 1000 * percentile(without, 95),
        "with_p50": 1000 * statistics.median(with_outbox),
        "with_p95": 1000 * percentile(with_outbox, 95),
        "deliveries": pending,
        "elapsed": elapsed,
    }


def run(label: str, urls: tuple[str, str], args: argparse.Namespace) -> None:
    for url in urls:
        migrate.upgrade(url)
    r = asyncio.run(bench(urls, args.flows, args.concurrency))
    print(
        f"{label:<10} payment path ({args.flows} create+confirm, concurrency {args.concurrency}): "
        f"p50 {r['with_p50']:.1f} ms with the outbox vs {r['without_p50']:.1f} ms without "
        f"(x{r['with_p50'] / r['without_p50']:.2f}, +{r['with_p50'] - r['without_p50']:.1f} ms); "
        f"p95 {r['with_p95']:.1f} vs {r['without_p95']:.1f} ms"
    )
    print(
        f"{label:<10} dispatcher: {r['deliveries']:.0f} deliveries in {r['elapsed']:.2f} s = "
        f"{r['deliveries'] / r['elapsed']:.0f} deliveries/s to a local receiver"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite", (f"sqlite:///{tmp}/ceiling.db", f"sqlite:///{tmp}/outbox.db"), args)
    base = os.environ.get("PAYSVC_TEST_DATABASE_URL")
    if base:
        urls = (
            pg_scratch.create(base, prefix="paysvc_bench"),
            pg_scratch.create(base, prefix="paysvc_bench"),
        )
        try:
            run("postgresql", urls, args)
        finally:
            for url in urls:
                pg_scratch.drop(url)


if __name__ == "__main__":
    main()
