#!/usr/bin/env python3
"""Benchmark the hot path over HTTP against `paysvc serve`, with a bare aiohttp handler as the
ceiling measured in the same run.

Starts `paysvc serve` exactly as a user does (SQLite file + sandbox gateway; and, when
PAYSVC_TEST_DATABASE_URL is set, a scratch PostgreSQL database served by 1 and then 2
processes), starts a bare aiohttp JSON handler answering the same routes, and drives both from
this process (a separate process from every server) at each concurrency for a fixed time:

    create   POST /payments/intents
    get      GET /payments/{id}
    flow     POST /payments/intents then POST /payments/{id}/confirm (one "request" = one flow)
    flow_key the same flow with an Idempotency-Key on both requests

For each cell: requests/s, p50/p99 latency and server CPU per request (utime+stime from
/proc/PID/stat of the server processes, before and after), each also as a ratio to the bare
handler in the same cell. Prints a table on stderr and one JSON object on stdout.

The platform around paysvc accepts its events, as in production: a small receiver (its own
process) stands for the order and notification services (ORDER_SERVICE_URL and
NOTIFICATION_SERVICE_URL point at it) and answers every delivery 204 at once. Each paysvc
cell also reports the events delivered per second during the cell (counted by the receiver)
and how long the outbox took to drain after the load stopped (every cell starts with an empty
outbox). Then, per paysvc target, a delivery phase measures the server CPU per delivered event
with no requests running: flows are made while the receiver holds its answers, then it lets
them through and the CPU spent until the outbox is empty is the dispatcher's (and the audit
sealer's, idle by then). `dispatcher_share` of a cell = deliveries in the cell x that CPU per
delivery / the cell's CPU: an estimate (a backlog drains in fuller batches than a steady
trickle, so it errs low).

    scripts/bench                       # ~4 s per cell (default)
    scripts/bench --seconds 2 --concurrency 1,32 --scenarios create,flow
    scripts/bench --quick               # a few seconds of tiny load: checks that it works

The machine running this is usually shared: absolute numbers move with its load; the ratios
to the ceiling measured in the same run are what to compare between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import pg_scratch  # noqa: E402

from paysvc.auth.principal import Role  # noqa: E402
from paysvc.auth.tokens import TokenVerifier  # noqa: E402

SCENARIOS = ("create", "get", "flow", "flow_key")
CUSTOMERS = 16
TICK = os.sysconf("SC_CLK_TCK")

# The ceiling: aiohttp with no middleware, parsing the same JSON bodies and answering the same
# routes with a small JSON document. Plain asyncio loop, stdlib json: aiohttp as it comes.
BARE_SERVER = """
import itertools, json, sys
from aiohttp import web
ids = itertools.count()
async def create(request):
    body = await request.json()
    return web.json_response({"id": f"pi_{next(ids)}", "status": "pending", **body}, status=201)
async def confirm(request):
    body = await request.json()
    return web.json_response({"id": request.match_info["id"], "status": "captured", **body})
async def get(request):
    return web.json_response({"id": request.match_info["id"], "status": "pending"})
async def health(request):
    return web.json_response({"status": "ok"})
app = web.Application()
app.add_routes([web.post("/payments/intents", create), web.post("/payments/{id}/confirm", confirm),
                web.get("/payments/{id}", get), web.get("/health", health)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

# The order and notification services as the platform runs them, reduced to accepting events:
# 204 at once (no signature check: its CPU is not paysvc's), counting what arrived. The bench
# closes `/_gate` to hold answers (building a backlog) and reads `/_count`.
RECEIVER = """
import asyncio, sys
from aiohttp import web
count = 0
gate = asyncio.Event()
gate.set()
async def accept(request):
    global count
    await request.read()
    await gate.wait()
    count += 1
    return web.Response(status=204)
async def counted(request):
    return web.json_response({"delivered": count})
async def set_gate(request):
    (gate.set if request.query["open"] == "1" else gate.clear)()
    return web.json_response({"open": gate.is_set()})
async def health(request):
    return web.json_response({"status": "ok"})
app = web.Application()
app.add_routes([web.post("/orders/{id}/payment-events", accept),
                web.put("/orders/{id}/status", accept), web.post("/notifications", accept),
                web.get("/_count", counted),
                web.post("/_gate", set_gate), web.get("/health", health)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
DRAIN_TIMEOUT = 120.0  # seconds for the outbox to empty after a cell
QUIET = 0.5  # seconds without a delivery before asking whether the outbox is empty


@dataclass
class Server:
    label: str
    processes: list[subprocess.Popen[bytes]]
    bases: list[str]
    idle_rss_mb: float = 0.0

    def cpu_seconds(self) -> float:
        total = 0
        for process in self.processes:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / TICK

    def rss_mb(self) -> float:
        total = 0
        for process in self.processes:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total / 1024


@dataclass
class Cell:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    cpu: float = 0.0
    delivered: int | None = None  # events the receiver accepted during the cell
    drained: int = 0  # and after it, until the outbox was empty
    drain_s: float | None = None  # after the cell, until the outbox was empty

    def summary(self) -> dict[str, float | int]:
        ordered = sorted(self.latencies) or [0.0]

        def pct(p: float) -> float:
            return round(1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 2)

        return {
            "requests": self.requests,
            "errors": self.errors,
            "req_per_s": round(self.requests / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": pct(50),
            "p99_ms": pct(99),
            "cpu_ms_per_req": round(1000 * self.cpu / self.requests, 3) if self.requests else 0.0,
            "cpu_s": round(self.cpu, 3),
        } | self.deliveries()

    def deliveries(self) -> dict[str, float | int]:
        if self.delivered is None or self.drain_s is None:
            return {}
        return {
            "delivered": self.delivered,
            "delivered_per_s": round(self.delivered / self.elapsed, 1) if self.elapsed else 0.0,
            "drain_s": round(self.drain_s, 2),
            "drained": self.drained,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Receiver:
    """The platform's order and notification services (RECEIVER, in its own process)."""

    base: str

    async def delivered(self, session: aiohttp.ClientSession) -> int:
        async with session.get(self.base + "/_count") as response:
            return int((await response.json())["delivered"])

    async def hold(self, session: aiohttp.ClientSession, held: bool) -> None:
        async with session.post(self.base + f"/_gate?open={0 if held else 1}") as response:
            response.raise_for_status()


async def pending(server: Server, session: aiohttp.ClientSession) -> float:
    """Deliveries still pending, as the dispatchers last counted them (/metrics)."""
    total = 0.0
    for base in server.bases:
        async with session.get(base + "/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith("paysvc_events_pending "):
                    total += float(line.split()[1])
    return total


async def drain(
    server: Server, receiver: Receiver, session: aiohttp.ClientSession
) -> tuple[float, float]:
    """Wait until the outbox is empty: nothing arrived for QUIET seconds and the dispatchers
    count nothing pending (/metrics is asked only then: rendering it costs the server CPU).
    Returns the seconds until the last delivery arrived and the server's CPU at that moment."""
    began = time.perf_counter()
    last, changed_at, cpu = -1, began, server.cpu_seconds()
    while True:
        if time.perf_counter() - began > DRAIN_TIMEOUT:
            raise SystemExit(f"the outbox did not drain within {DRAIN_TIMEOUT:g} s")
        await asyncio.sleep(0.05)
        now = await receiver.delivered(session)
        if now != last:
            last, changed_at, cpu = now, time.perf_counter(), server.cpu_seconds()
        elif time.perf_counter() - changed_at >= QUIET:
            if not await pending(server, session):
                return changed_at - began, cpu
            changed_at = time.perf_counter()  # the gauge lags up to a second: look again


async def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(
                    f"server exited ({process.returncode}):\n{log.read_text()[-3000:]}"
                )
            try:
                async with session.get(base + "/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"server at {base} not ready after 120 s:\n{log.read_text()[-3000:]}")


@contextmanager
def started(
    label: str, commands: list[tuple[list[str], dict[str, str]]], work: Path
) -> Iterator[Server]:
    """Start each command (one per process) and wait for /health; stop them all at the end."""
    server = Server(label, [], [])
    try:
        for n, (command, env) in enumerate(commands):
            port = free_port()
            log = work / f"{label}-{n}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(  # noqa: S603 - our own interpreter and entry points
                    [*command, str(port)],
                    env={**os.environ, **env},
                    stdout=subprocess.DEVNULL,  # the JSON access log, as a user would ship it away
                    stderr=sink,
                    cwd=work,
                )
            server.processes.append(process)
            base = f"http://127.0.0.1:{port}"
            asyncio.run(wait_ready(base, process, log))
            server.bases.append(base)
        time.sleep(0.5)
        server.idle_rss_mb = round(server.rss_mb(), 1)
        yield server
    finally:
        for process in server.processes:
            process.terminate()
        for process in server.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def paysvc_commands(
    database_url: str, processes: int, secret: str, key: str, platform: str
) -> list[tuple[list[str], dict[str, str]]]:
    env = {
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": secret,
        "ENCRYPTION_KEY": key,
        "PAYMENT_GATEWAY": "sandbox",
        # Required outside SQLite (a generated secret is refused there); one per run.
        "EVENTS_SIGNING_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "RATE_LIMIT_PER_SECOND": "1000000",
        "RATE_LIMIT_BURST": "1000000",
        # The platform accepts events (EVENTS_DESTINATIONS as configured: order,notification
        # by default; the token is there for an order-status destination).
        "ORDER_SERVICE_URL": platform,
        "NOTIFICATION_SERVICE_URL": platform,
        "ORDER_SERVICE_TOKEN": secrets.token_urlsafe(24),
        "EVENTS_SIGNING_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
    }
    paysvc = str(Path(sys.executable).parent / "paysvc")
    return [([paysvc, "serve", "--host", "127.0.0.1", "--port"], env)] * processes


async def drive(
    server: Server,
    scenario: str,
    concurrency: int,
    seconds: float,
    minimum: int,
    tokens: list[str],
    receiver: Receiver | None = None,
) -> Cell:
    cell = Cell()
    run = secrets.token_hex(4)
    counter = iter(range(10**9))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call(method: str, url: str, token: str, body: Any, key: str | None) -> Any:
            headers = {"Authorization": f"Bearer {token}"}
            if key:
                headers["Idempotency-Key"] = key
            async with session.request(method, url, json=body, headers=headers) as response:
                payload = await response.json()
                if response.status >= 300:
                    raise RuntimeError(f"{method} {url}: {response.status} {payload}")
                return payload

        async def create(base: str, n: int, key: bool) -> str:
            body = {"order_id": f"b-{run}-{n}", "amount": 1000 + n % 5000, "currency": "usd"}
            created = await call(
                "POST",
                base + "/payments/intents",
                tokens[n % CUSTOMERS],
                body,
                f"c-{run}-{n}" if key else None,
            )
            return str(created["id"])

        # GET reads payments created beforehand, each with its owner's token.
        owned: list[tuple[str, str]] = []
        if scenario == "get":
            for n in range(2 * CUSTOMERS):
                owned.append(
                    (tokens[n % CUSTOMERS], await create(server.bases[0], next(counter), False))
                )

        async def one(base: str, n: int) -> None:
            if scenario == "create":
                await create(base, n, False)
            elif scenario == "get":
                token, payment = owned[n % len(owned)]
                await call("GET", f"{base}/payments/{payment}", token, None, None)
            else:
                key = scenario == "flow_key"
                payment = await create(base, n, key)
                await call(
                    "POST",
                    f"{base}/payments/{payment}/confirm",
                    tokens[n % CUSTOMERS],
                    {"payment_method": "pm_card_visa"},
                    f"f-{run}-{n}" if key else None,
                )

        async def worker(w: int, deadline: float, record: bool) -> None:
            base = server.bases[w % len(server.bases)]
            done = 0
            while time.perf_counter() < deadline or (record and done < minimum):
                n = next(counter)
                began = time.perf_counter()
                try:
                    await one(base, n)
                except (TimeoutError, RuntimeError, aiohttp.ClientError) as error:
                    if record:
                        cell.errors += 1
                        if cell.errors == 1:
                            print(f"  first error: {error}", file=sys.stderr)
                    continue
                finally:
                    done += 1
                if record:
                    cell.latencies.append(time.perf_counter() - began)
                    cell.requests += 1

        # Warm up (connections, caches), then measure.
        await asyncio.gather(
            *(
                worker(w, time.perf_counter() + min(1.0, seconds / 4), False)
                for w in range(concurrency)
            )
        )
        if receiver is not None:  # every cell starts with an empty outbox
            await drain(server, receiver, session)
            delivered = await receiver.delivered(session)
        cpu_before, began = server.cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(worker(w, began + seconds, True) for w in range(concurrency)))
        cell.elapsed = time.perf_counter() - began
        cell.cpu = server.cpu_seconds() - cpu_before
        if receiver is not None:
            cell.delivered = await receiver.delivered(session) - delivered
            cell.drain_s, _cpu = await drain(server, receiver, session)
            cell.drained = await receiver.delivered(session) - delivered - cell.delivered
    return cell


async def delivery_cost(
    server: Server, receiver: Receiver, seconds: float, minimum: int, tokens: list[str]
) -> dict[str, float | int]:
    """Server CPU per delivered event with no request running (see the module docstring):
    flows made while the receiver holds its answers (under the 10 s send timeout), then the
    CPU from letting them through until the outbox is empty."""
    async with aiohttp.ClientSession() as session:
        await receiver.hold(session, True)
        try:
            await drive(server, "flow", 8, seconds, minimum, tokens)
            await asyncio.sleep(0.5)  # the requests' own after-work (audit seals) is done
            cpu_before, delivered = server.cpu_seconds(), await receiver.delivered(session)
        finally:
            await receiver.hold(session, False)
        drain_s, cpu_after = await drain(server, receiver, session)
        cpu = cpu_after - cpu_before
        count = await receiver.delivered(session) - delivered
    return {
        "deliveries": count,
        "drain_s": round(drain_s, 2),
        "delivered_per_s": round(count / drain_s, 1) if drain_s > 0 else 0.0,
        "cpu_ms_per_delivery": round(1000 * cpu / count, 3) if count else 0.0,
    }


def ratio(mine: float, ceiling: float) -> float | None:
    return round(mine / ceiling, 4) if ceiling else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per cell")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--no-postgresql", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny load: checks that it runs")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    scenarios = [s for s in args.scenarios.split(",") if s]
    if unknown := set(scenarios) - set(SCENARIOS):
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    seconds, minimum = args.seconds, 20
    if args.quick:
        seconds, minimum, levels = 0.2, 3, [1, 2]

    secret = secrets.token_urlsafe(48)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    verifier = TokenVerifier(secret)
    now = dt.datetime.now(dt.UTC)
    tokens = [
        verifier.mint(f"cus_{n}", Role.CUSTOMER, dt.timedelta(hours=2), now)
        for n in range(CUSTOMERS)
    ]

    targets: list[tuple[str, str, int]] = []  # (backend, database url, processes)
    scratch: list[str] = []
    report: dict[str, Any] = {
        "seconds_per_cell": seconds,
        "concurrency": levels,
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "idle_rss_mb": {},
        "results": [],
        "delivery": {},
    }
    with tempfile.TemporaryDirectory(prefix="paysvc-bench-") as tmp:
        work = Path(tmp)
        targets.append(("sqlite", f"sqlite:///{work}/bench.db", 1))
        base_url = os.environ.get("PAYSVC_TEST_DATABASE_URL")
        if base_url and not args.no_postgresql and not args.quick:
            pg = pg_scratch.create(base_url, prefix="paysvc_bench")
            scratch.append(pg)
            targets += [("postgresql", pg, 1), ("postgresql", pg, 2)]
        bare_command: list[tuple[list[str], dict[str, str]]] = [
            ([sys.executable, "-c", BARE_SERVER], {})
        ]
        receiver_command: list[tuple[list[str], dict[str, str]]] = [
            ([sys.executable, "-c", RECEIVER], {})
        ]
        try:
            with started("bare", bare_command, work) as bare:
                report["idle_rss_mb"]["bare"] = bare.idle_rss_mb
                ceiling: dict[tuple[str, int], dict[str, Any]] = {}
                for scenario in scenarios:
                    for level in levels:
                        cell = asyncio.run(drive(bare, scenario, level, seconds, minimum, tokens))
                        ceiling[scenario, level] = cell.summary()
            for backend, url, processes in targets:
                label = f"{backend}x{processes}"
                with (
                    started("receiver", receiver_command, work) as platform,
                    started(
                        label,
                        paysvc_commands(url, processes, secret, key, platform.bases[0]),
                        work,
                    ) as server,
                ):
                    receiver = Receiver(platform.bases[0])
                    report["idle_rss_mb"][label] = server.idle_rss_mb
                    rows: list[dict[str, Any]] = []
                    for scenario in scenarios:
                        for level in levels:
                            mine = asyncio.run(
                                drive(server, scenario, level, seconds, minimum, tokens, receiver)
                            ).summary()
                            bare_cell = ceiling[scenario, level]
                            report["results"].append(
                                {
                                    "backend": backend,
                                    "processes": processes,
                                    "scenario": scenario,
                                    "concurrency": level,
                                    **mine,
                                    "ceiling": bare_cell,
                                    "ratio": {
                                        "req_per_s": ratio(
                                            float(mine["req_per_s"]), float(bare_cell["req_per_s"])
                                        ),
                                        "cpu_ms_per_req": ratio(
                                            float(mine["cpu_ms_per_req"]),
                                            float(bare_cell["cpu_ms_per_req"]),
                                        ),
                                        "p50_ms": ratio(
                                            float(mine["p50_ms"]), float(bare_cell["p50_ms"])
                                        ),
                                        "p99_ms": ratio(
                                            float(mine["p99_ms"]), float(bare_cell["p99_ms"])
                                        ),
                                    },
                                }
                            )
                            rows.append(report["results"][-1])
                            print_row(rows[-1])
                    cost = asyncio.run(
                        delivery_cost(server, receiver, min(seconds, 4.0), minimum, tokens)
                    )
                    report["delivery"][label] = cost
                    for row in rows:
                        row["dispatcher_share"] = (
                            round(
                                row["delivered"]
                                * cost["cpu_ms_per_delivery"]
                                / 1000
                                / row["cpu_s"],
                                3,
                            )
                            if row["cpu_s"]
                            else None
                        )
                    print_delivery(label, cost, rows)
        finally:
            for url in scratch:
                pg_scratch.drop(url)
    report["load_average_after"] = list(os.getloadavg())
    print(f"idle RSS MB: {report['idle_rss_mb']}", file=sys.stderr)
    print(json.dumps(report))


HEADER = False


def print_row(row: dict[str, Any]) -> None:
    global HEADER
    if not HEADER:
        HEADER = True
        print(
            f"{'target':<13}{'scenario':<9}{'c':>3} {'req/s':>8} {'%ceil':>7} {'p50 ms':>8} "
            f"{'p99 ms':>8} {'p99 xceil':>9} {'cpu ms':>8} {'xceil':>7} {'errors':>6} "
            f"{'events/s':>8} {'drain':>6}",
            file=sys.stderr,
        )
    r = row["ratio"]
    print(
        f"{row['backend'] + 'x' + str(row['processes']):<13}{row['scenario']:<9}{row['concurrency']:>3} "
        f"{row['req_per_s']:>8.1f} {100 * (r['req_per_s'] or 0):>6.1f}% {row['p50_ms']:>8.2f} "
        f"{row['p99_ms']:>8.2f} {r['p99_ms'] or 0:>9.1f} {row['cpu_ms_per_req']:>8.3f} "
        f"{r['cpu_ms_per_req'] or 0:>7.1f} {row['errors']:>6} {row['delivered_per_s']:>8.1f} "
        f"{row['drain_s']:>6.2f}",
        file=sys.stderr,
        flush=True,
    )


def print_delivery(label: str, cost: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print(
        f"{label}: {cost['deliveries']} held deliveries drained at {cost['delivered_per_s']}/s, "
        f"{cost['cpu_ms_per_delivery']} ms server CPU per delivery; dispatcher share (est.) "
        + ", ".join(
            f"{r['scenario']} c={r['concurrency']} {100 * (r['dispatcher_share'] or 0):.0f}%"
            for r in rows
        ),
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    main()
