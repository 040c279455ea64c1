#!/usr/bin/env python3
"""Crash test through real processes (run it as `scripts/chaos`).

Starts `paysvc serve` (one instance on a fresh SQLite file; two on a scratch PostgreSQL database
when asked), drives a bounded mixed load through HTTP — create, confirm (sandbox cards including
`pm_card_timeout`, declines and `pm_card_refundFail`), capture, cancel, refunds, every POST with
an Idempotency-Key, some sent twice at once — and `kill -9`s an instance at random moments,
restarting it each time. Clients retry every unanswered request with its key until it gets an
answer. Then the instances stop, `paysvc reconcile --apply` runs until nothing is pending, and
the invariants are checked against the sandbox gateway's own ledger (tests/simulation/
invariants.py) and `paysvc audit verify`. Prints a summary; exits 1 on any violation.

    scripts/chaos [--seed S] [--kills 3] [--duration 20] [--database sqlite|postgresql|all]

`--database all` (the default) is SQLite, plus PostgreSQL when PAYSVC_TEST_DATABASE_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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
from paysvc.bootstrap import build_container  # noqa: E402
from paysvc.config import Settings  # noqa: E402
from tests.simulation.invariants import (  # noqa: E402
    Journal,
    keyed_violations,
    ledger_violations,
    unknown_operations,
)
from tests.simulation.world import CARDS, retry_later  # noqa: E402

PAYSVC = ROOT / ".venv" / "bin" / "paysvc"
READY_DEADLINE = 120.0  # seconds for an instance to answer /health/ready


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    name: str
    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own CLI
                [str(PAYSVC), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + READY_DEADLINE
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start-up:\n{self.tail()}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(self.base + "/health/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {READY_DEADLINE:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Stats:
    kills: int = 0
    requests: int = 0  # distinct keyed requests
    attempts: int = 0  # HTTP attempts, retries included
    lost: int = 0  # attempts a kill cut off: connection died, or refused while restarting
    server_errors: list[str] = field(default_factory=list)


class Load:
    """The clients: flows of payments over the instances, retrying each request with its key."""

    def __init__(
        self, instances: list[Instance], secret: str, rng: random.Random, run: str
    ) -> None:
        self.instances = instances
        self.rng = rng
        self.run = run
        self.journal = Journal()
        self.stats = Stats()
        now = dt.datetime.now(dt.UTC)
        verifier = TokenVerifier(secret)
        self.customers = [
            {
                "Authorization": "Bearer "
                + verifier.mint(f"c{n}", Role.CUSTOMER, dt.timedelta(hours=2), now)
            }
            for n in range(5)
        ]
        self.service = {
            "Authorization": "Bearer "
            + verifier.mint("orders", Role.SERVICE, dt.timedelta(hours=2), now)
        }
        self.session: aiohttp.ClientSession | None = None
        self.give_up_at = float("inf")

    async def send(
        self, headers: dict[str, str], path: str, body: dict[str, Any], key: str
    ) -> tuple[int, dict[str, Any]]:
        """POST until an answer that executed comes back (any instance; same key every time)."""
        assert self.session is not None
        self.journal.sent.add(key)
        if path.endswith(("/intents", "/refunds")):  # what it creates names its key
            body = {**body, "metadata": {"request_key": key}}
        self.stats.requests += 1
        delay = 0.05
        while True:
            instance = self.rng.choice(self.instances)
            self.stats.attempts += 1
            try:
                async with self.session.post(
                    instance.base + path, json=body, headers={**headers, "Idempotency-Key": key}
                ) as response:
                    data: dict[str, Any] = await response.json(content_type=None)
                    status = response.status
            except (TimeoutError, aiohttp.ClientError, ValueError):
                self.stats.lost += 1
            else:
                if not retry_later(status, data):
                    self.journal.answered(key, status, data)
                    if status == 500:
                        self.stats.server_errors.append(f"{status} {path} {key}: {data}")
                    return status, data
            if time.monotonic() > self.give_up_at:
                return 0, {}
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def get(self, path: str) -> dict[str, Any] | None:
        assert self.session is not None
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            async with self.session.get(
                self.rng.choice(self.instances).base + path, headers=self.service
            ) as response:
                if response.status == 200:
                    return await response.json()  # type: ignore[no-any-return]
        return None

    async def flow(self, n: int, settle: float) -> None:
        """One payment's life. Its own RNG, so a seed decides every flow's choices."""
        rng = random.Random(f"{self.run}-{n}")
        customer = rng.choice(self.customers)
        step = 0

        def key() -> str:
            nonlocal step
            step += 1
            return f"{self.run}-{n}-{step}"

        amount = rng.randint(500, 5000)
        order = f"{self.run}-order-{n}"
        manual = rng.random() < 0.35
        card = rng.choices([c for c, _ in CARDS], [w for _, w in CARDS])[0]
        body = {"order_id": order, "amount": amount, "currency": "usd"}
        if manual:
            body["capture_method"] = "manual"
        status, payment = await self.send(customer, "/payments/intents", body, key())
        if status != 201:
            return
        pid = payment["id"]
        confirm = {"payment_method": card}
        if rng.random() < 0.15:  # a second intent for the same order, confirmed at once
            status, other = await self.send(customer, "/payments/intents", body, key())
            if status == 201:
                await asyncio.gather(
                    self.send(customer, f"/payments/{other['id']}/confirm", confirm, key()),
                    self.send(customer, f"/payments/{pid}/confirm", confirm, key()),
                )
                return
        status, payment = await self.twice(
            rng, customer, f"/payments/{pid}/confirm", confirm, key()
        )
        if status == 202:  # processing: the completer settles it; wait a bounded while
            payment = await self.wait_settled(pid, settle) or payment
        state = payment.get("status")
        if state == "authorized":
            choice = rng.random()
            if choice < 0.6:
                capture = (
                    {} if rng.random() < 0.5 else {"amount_to_capture": rng.randint(1, amount)}
                )
                status, payment = await self.twice(
                    rng, self.service, f"/payments/{pid}/capture", capture, key()
                )
                state = payment.get("status")
            elif choice < 0.9:
                await self.twice(rng, customer, f"/payments/{pid}/cancel", {}, key())
                return
        if state not in ("captured", "partially_refunded"):
            return
        captured = int(payment.get("amount_captured") or 0)
        for _ in range(rng.randint(0, 3)):
            pick = rng.random()
            if pick < 0.15:
                await self.twice(
                    rng,
                    self.service,
                    f"/payments/{pid}/cancel",
                    {"refund_if_captured": True},
                    key(),
                )
            elif pick < 0.35:  # two refunds at once, different keys
                part = {"amount": max(1, captured // 3)}
                await asyncio.gather(
                    self.send(self.service, f"/payments/{pid}/refunds", part, key()),
                    self.send(self.service, f"/payments/{pid}/refunds", part, key()),
                )
            else:
                refund = {} if pick > 0.85 else {"amount": rng.randint(1, max(1, captured // 2))}
                await self.twice(rng, self.service, f"/payments/{pid}/refunds", refund, key())

    async def twice(
        self, rng: random.Random, headers: dict[str, str], path: str, body: dict[str, Any], key: str
    ) -> tuple[int, dict[str, Any]]:
        """Send; a fifth of the time also at once a duplicate with the same key (a client that
        timed out and retried while the first was still running)."""
        if rng.random() < 0.2:
            first, _ = await asyncio.gather(
                self.send(headers, path, body, key), self.send(headers, path, body, key)
            )
            self.stats.requests -= 1
            return first
        return await self.send(headers, path, body, key)

    async def wait_settled(self, pid: str, settle: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            payment = await self.get(f"/payments/{pid}")
            if payment is not None and payment["status"] != "processing":
                return payment
            await asyncio.sleep(0.5)
        return None


async def chaos(
    database: str,
    workdir: Path,
    url: str,
    seed: int,
    kills: int,
    duration: float,
    concurrency: int,
    stale: float,
) -> tuple[Stats, list[str]]:
    rng = random.Random(seed)
    secret = secrets.token_urlsafe(48)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": url,
        "JWT_SECRET_KEY": secret,
        "ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        # Required outside SQLite (generated secrets are refused there).
        "EVENTS_SIGNING_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "PAYMENT_GATEWAY": "sandbox",
        "RATE_LIMIT_PER_SECOND": "1000000",
        "RATE_LIMIT_BURST": "1000000",
        # Short deadlines so a crashed request is taken over in seconds (the order of the
        # deadlines is derived from OPERATION_STALE_SECONDS and checked at start).
        "OPERATION_STALE_SECONDS": str(stale),
        "STRIPE_TIMEOUT_SECONDS": str(min(20.0, stale / 2)),
        "RECONCILE_INTERVAL": str(max(1.0, stale / 2)),
    }
    count = 2 if database == "postgresql" else 1
    instances = [Instance(f"paysvc-{n + 1}", env, workdir) for n in range(count)]
    load = Load(instances, secret, rng, f"s{seed}")
    violations: list[str] = []
    try:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            load.session = session
            for instance in instances:  # started one after the other: the first migrates
                instance.start()
                await instance.ready(session)
            await drive(load, session, rng, kills, duration, concurrency, stale)
        for instance in instances:
            instance.stop()
        violations += [f"server_error: {e}" for e in load.stats.server_errors]
        violations += load.journal.violations()
        violations += await settle_and_check(env, workdir, stale, load.journal)
    except BaseException:
        for instance in instances:
            print(f"--- {instance.name} log (tail)\n{instance.tail()}", file=sys.stderr)
        raise
    finally:
        for instance in instances:
            instance.stop()
    return load.stats, violations


async def drive(
    load: Load,
    session: aiohttp.ClientSession,
    rng: random.Random,
    kills: int,
    duration: float,
    concurrency: int,
    stale: float,
) -> None:
    """Flows for `duration` seconds; `kills` kill -9s at random moments in between."""
    started = time.monotonic()
    # Retries go on long enough for a crashed request to be taken over (well past the
    # idempotency take-over of the service under test), then give up: reported unanswered.
    load.give_up_at = float("inf")
    settle = 4 * stale
    gate = asyncio.Semaphore(concurrency)
    flows: list[asyncio.Task[None]] = []

    async def one(n: int) -> None:
        async with gate:
            await load.flow(n, settle)

    async def killer() -> None:
        moments = sorted(rng.uniform(0.1, 0.9) * duration for _ in range(kills))
        for moment in moments:
            await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
            victims = load.instances if rng.random() < 0.2 else [rng.choice(load.instances)]
            for victim in victims:
                victim.kill()
            load.stats.kills += len(victims)
            for victim in victims:
                victim.start()
            for victim in victims:
                await victim.ready(session)

    killing = asyncio.create_task(killer())
    n = 0
    while time.monotonic() - started < duration or not killing.done():
        async with gate:
            pass
        flows.append(asyncio.create_task(one(n)))
        n += 1
        await asyncio.sleep(0.01)
    await killing
    load.give_up_at = time.monotonic() + max(240.0, 8 * stale)
    await asyncio.gather(*flows)


async def settle_and_check(
    env: dict[str, str], workdir: Path, stale: float, journal: Journal
) -> list[str]:
    """`paysvc reconcile --apply` until nothing is pending (bounded), `audit verify`, then the
    invariants against the sandbox ledger."""
    settings = Settings.from_env(env)
    container = build_container(settings)
    found: list[str] = []
    try:
        deadline = time.monotonic() + max(180.0, 10 * stale)
        while True:
            result = cli(env, workdir, "reconcile", "--since", "24h", "--apply")
            if result.returncode not in (0, 3):
                found.append(f"reconcile_failed: exit {result.returncode}: {result.stderr[-500:]}")
            pending = [
                v for v in await ledger_violations(container) if v.startswith("pending_left")
            ]
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.sleep(min(2.0, stale))
        verify = cli(env, workdir, "audit", "verify")
        if verify.returncode != 0:
            found.append(
                f"audit_verify: exit {verify.returncode}: "
                f"{verify.stdout[-300:]}{verify.stderr[-300:]}"
            )
        found += await ledger_violations(container)
        found += await keyed_violations(container, journal)
        # Every operation was answerable inside the gateway's window: none may be unknown.
        found += [f"unknown_operation: {op.id}" for op in await unknown_operations(container)]
    finally:
        await container.close()
    return found


def cli(env: dict[str, str], workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own CLI
        [str(PAYSVC), *args],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=None, help="decides the load and the kills")
    parser.add_argument("--kills", type=int, default=3, help="kill -9s during the load")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=8, help="payments in flight")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql", "all"),
        default="all",
        help="all: SQLite, plus PostgreSQL when PAYSVC_TEST_DATABASE_URL is set",
    )
    parser.add_argument(
        "--stale",
        type=float,
        default=2.0,
        help="OPERATION_STALE_SECONDS for the instances (the deadlines derive from it)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and the database")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    databases = [args.database] if args.database != "all" else ["sqlite"]
    if args.database == "all" and os.environ.get("PAYSVC_TEST_DATABASE_URL"):
        databases.append("postgresql")
    if "postgresql" in databases and not os.environ.get("PAYSVC_TEST_DATABASE_URL"):
        parser.error("--database postgresql needs PAYSVC_TEST_DATABASE_URL")
    failed = False
    for database in databases:
        began = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{database}-"))
        url = (
            pg_scratch.create(os.environ["PAYSVC_TEST_DATABASE_URL"], prefix="paysvc_chaos")
            if database == "postgresql"
            else f"sqlite:///{workdir / 'chaos.db'}"
        )
        violations = ["the run did not finish"]
        try:
            stats, violations = asyncio.run(
                chaos(
                    database,
                    workdir,
                    url,
                    seed,
                    args.kills,
                    args.duration,
                    args.concurrency,
                    args.stale,
                )
            )
        finally:
            if violations or args.keep:
                kept = url if args.keep or database == "sqlite" else "dropped"
                print(f"chaos: logs kept in {workdir} (database: {kept})", file=sys.stderr)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
            if database == "postgresql" and not args.keep:
                pg_scratch.drop(url)
        print(
            f"chaos: {database} seed {seed}: {stats.kills} kills, {stats.requests} requests "
            f"({stats.attempts} attempts, {stats.lost} cut off by kills), "
            f"{len(violations)} violations, {time.monotonic() - began:.0f} s"
        )
        for violation in violations:
            print(f"  VIOLATION {violation}")
        failed = failed or bool(violations)
    if failed:
        print(
            f"chaos: FAILED — replay with: scripts/chaos --seed {seed} --kills {args.kills} "
            f"--duration {args.duration:g} --concurrency {args.concurrency} "
            f"--stale {args.stale:g} --database {args.database}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
