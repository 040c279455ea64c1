#!/usr/bin/env bash
""":"
# Run as a bash script first: bootstrap the project's environment, re-run this file with its Python.
source "$(dirname "$0")/_env"; exec "$VENV/python" "$0" "$@"
":
Benchmark: N concurrent create+confirm flows through the real HTTP stack, in process.

Runs against a fresh SQLite file and, when PAYSVC_TEST_DATABASE_URL is set, a scratch
PostgreSQL database beside it (created and dropped). Prints throughput and latency.

    scripts/bench_confirm.py [--flows 400] [--concurrency 50] [--no-keys]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pg_scratch

from paysvc.auth.principal import Role
from paysvc.auth.tokens import TokenVerifier
from paysvc.bootstrap import build_container
from paysvc.config import Settings
from paysvc.db import migrate
from paysvc.web.app import create_app

CUSTOMERS = 10


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bench(url: str, flows: int, concurrency: int, keys: bool) -> dict[str, float]:
    jwt_secret = secrets.token_urlsafe(48)
    settings = Settings.from_env(
        {
            "DATABASE_URL": url,
            "JWT_SECRET_KEY": jwt_secret,
            "ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "EVENTS_SIGNING_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "PAYMENT_GATEWAY": "sandbox",
            "RATE_LIMIT_PER_SECOND": "1000000",
            "RATE_LIMIT_BURST": "1000000",
        }
    )
    now = dt.datetime.now(dt.UTC)
    tokens = [
        TokenVerifier(jwt_secret).mint(str(n), Role.CUSTOMER, dt.timedelta(hours=1), now)
        for n in range(CUSTOMERS)
    ]
    server = TestServer(create_app(build_container(settings)))
    await server.start_server()
    base = str(server.make_url("/"))
    flow_times: list[float] = []
    confirm_times: list[float] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)

    async def flow(session: ClientSession, n: int) -> None:
        nonlocal failures
        headers = {"Authorization": f"Bearer {tokens[n % CUSTOMERS]}"}
        async with gate:
            started = time.perf_counter()
            body = {"order_id": f"bench-{n}", "amount": 1000 + n, "currency": "usd"}
            extra = {"Idempotency-Key": f"create-{n}"} if keys else {}
            async with session.post(
                base + "payments/intents", json=body, headers={**headers, **extra}
            ) as response:
                created = await response.json()
                ok = response.status == 201
            if ok:
                confirming = time.perf_counter()
                extra = {"Idempotency-Key": f"confirm-{n}"} if keys else {}
                async with session.post(
                    base + f"payments/{created['id']}/confirm",
                    json={"payment_method": "pm_card_visa"},
                    headers={**headers, **extra},
                ) as response:
                    await response.read()
                    ok = response.status == 200
                confirm_times.append(time.perf_counter() - confirming)
            if not ok:
                failures += 1
            flow_times.append(time.perf_counter() - started)

    try:
        async with ClientSession() as session:
            await asyncio.gather(*(flow(session, -1 - n) for n in range(20)))  # warm up
            flow_times.clear()
            confirm_times.clear()
            started = time.perf_counter()
            await asyncio.gather(*(flow(session, n) for n in range(flows)))
            elapsed = time.perf_counter() - started
    finally:
        await server.close()
    return {
        "elapsed": elapsed,
        "flows_per_s": flows / elapsed,
        "requests_per_s": 2 * flows / elapsed,
        "flow_p50_ms": 1000 * statistics.median(flow_times),
        "flow_p95_ms": 1000 * percentile(flow_times, 95),
        "confirm_p50_ms": 1000 * statistics.median(confirm_times),
        "confirm_p95_ms": 1000 * percentile(confirm_times, 95),
        "failures": failures,
    }


def run(label: str, url: str, args: argparse.Namespace) -> None:
    migrate.upgrade(url)
    result = asyncio.run(bench(url, args.flows, args.concurrency, not args.no_keys))
    print(
        f"{label:<10} {args.flows} flows x2 requests, concurrency {args.concurrency}, "
        f"Idempotency-Key {'off' if args.no_keys else 'on'}: "
        f"{result['elapsed']:.2f} s, {result['flows_per_s']:.0f} flows/s "
        f"({result['requests_per_s']:.0f} req/s); flow p50 {result['flow_p50_ms']:.1f} ms, "
        f"p95 {result['flow_p95_ms']:.1f} ms; confirm p50 {result['confirm_p50_ms']:.1f} ms, "
        f"p95 {result['confirm_p95_ms']:.1f} ms; failures {result['failures']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description="N concurrent create+confirm flows through the HTTP stack."
    )
    parser.add_argument("--flows", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--no-keys", action="store_true", help="send no Idempotency-Key")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run("sqlite", f"sqlite:///{tmp}/bench.db", args)
    base = os.environ.get("PAYSVC_TEST_DATABASE_URL")
    if base:
        url = pg_scratch.create(base, prefix="paysvc_bench")
        try:
            run("postgresql", url, args)
        finally:
            pg_scratch.drop(url)


if __name__ == "__main__":
    main()
