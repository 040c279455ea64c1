#!/usr/bin/env python3
"""Growth benchmark: build N payments (default 1,000,000) through paysvc's own models, keyring,
audit log and sealer, then time what must stay fast at that size:

- every list page, first and after 50,000 rows, for each filter (payments and the audit list);
- /admin/transactions over a year (totals, and by day);
- `audit verify` of every entry (parallel ranges);
- `paysvc keys rotate` of every value (its own process, as an operator runs it) with the p99 of
  serving writes (create intent) measured meanwhile;
- `paysvc serve` start-up to a healthy /health.

Rows are built in bulk (thousands per transaction) but as the service builds them: Payment
objects with their encrypted fields sealed by the keyring, one audit entry each through AuditLog
(stamped, then chained by the sealer), the rollup kept by its triggers. Statuses, currencies and
customers are spread; creation times cover the last year.

    scripts/bench_growth                       # 1M on SQLite, and PostgreSQL when
                                               # PAYSVC_TEST_DATABASE_URL is set
    scripts/bench_growth --payments 20000 --backend sqlite

Prints a table on stderr and one JSON object on stdout. Targets (issue 14): pages < 50 ms,
analytics < 100 ms, verify of 1M < 30 s, rotation of 1M values < 5 min with serving writes
p99 < 100 ms, start-up < 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import random
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import insert, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import pg_scratch  # noqa: E402

from paysvc.admin.service import SummaryQuery  # noqa: E402
from paysvc.audit.chain import save_checkpoint, seal_pending, verify  # noqa: E402
from paysvc.audit.integrity import link  # noqa: E402
from paysvc.audit.models import AuditEntry  # noqa: E402
from paysvc.audit.service import AuditLog  # noqa: E402
from paysvc.audit.trail import AuditFilter  # noqa: E402
from paysvc.auth.principal import Actor, Role  # noqa: E402
from paysvc.bootstrap import Container, build_container  # noqa: E402
from paysvc.config import Settings  # noqa: E402
from paysvc.db import migrate  # noqa: E402
from paysvc.ids import new_id  # noqa: E402
from paysvc.keys import service as keys  # noqa: E402
from paysvc.payments.models import Payment  # noqa: E402
from paysvc.payments.repository import PaymentFilter  # noqa: E402
from paysvc.payments.service import NewIntent  # noqa: E402

CHUNK = 5000
SECRETS = {
    "JWT_SECRET_KEY": "bench-" + "x" * 40,
    "EVENTS_SIGNING_SECRET": "whsec_" + base64.b64encode(b"g" * 32).decode(),
}
CUSTOMERS = 1000
DEEP = 50_000
BASELINE_S = 10.0
ADMIN = Actor(id="bench-admin", role=Role.ADMIN, origin="127.0.0.1", request_id=None)
SERVICE = Actor(id="bench-service", role=Role.SERVICE, origin="127.0.0.1", request_id=None)
STATUSES = [  # (status, weight)
    ("captured", 55),
    ("pending", 10),
    ("failed", 10),
    ("refunded", 5),
    ("partially_refunded", 5),
    ("authorized", 5),
    ("cancelled", 5),
    ("processing", 5),
]


class AtClock:
    def __init__(self) -> None:
        self.at = dt.datetime.now(dt.UTC)

    def now(self) -> dt.datetime:
        return self.at


def settings(url: str, key: str, retired: str = "") -> Settings:
    return Settings.from_env(
        {
            "DATABASE_URL": url,
            **SECRETS,
            "ENCRYPTION_KEY": key,
            "ENCRYPTION_KEYS_RETIRED": retired,
            "PAYMENT_GATEWAY": "sandbox",
            "RECONCILE_INTERVAL": "0",
        }
    )


def payment_row(n: int, created: dt.datetime, rng: random.Random) -> Payment:
    status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
    amount = rng.randrange(100, 100_000)
    captured = amount if status in ("captured", "refunded", "partially_refunded") else 0
    refunded = {"refunded": captured, "partially_refunded": captured // 3}.get(status, 0)
    return Payment(
        id=new_id("pay"),
        order_id=f"growth-{n}",
        customer_id=f"cus_{n % CUSTOMERS}",
        amount=amount,
        currency=rng.choice(("usd", "usd", "usd", "eur")),
        amount_capturable=amount if status == "authorized" else 0,
        amount_captured=captured,
        amount_refunded=refunded,
        status=status,
        capture_method="automatic",
        gateway_reference=None if status == "pending" else f"pi_growth_{n}",
        payment_method="pm_card_visa" if status != "pending" else None,
        card_brand="visa",
        card_last4="4242",
        description=f"order growth-{n}",
        meta={"n": str(n)},
        receipt_email=f"buyer{n % 5000}@example.com",
        disputed=False,
        gateway="sandbox",
        created_at=created,
        updated_at=created,
    )


def _columns(row: Any) -> dict[str, Any]:
    """The row's column values by column name (encrypted values sealed by the keyring)."""
    return {prop.columns[0].name: getattr(row, prop.key) for prop in row.__mapper__.column_attrs}


async def build(container: Container, count: int, log: Callable[[str], None]) -> None:
    """`count` payments, each with its `payment.create` audit entry, `CHUNK` per transaction.

    Each payment is a Payment built as the service builds it, its encrypted fields sealed by
    the keyring (`Encrypted.seal`, what `before_flush` does); each audit entry comes from
    `AuditLog.entry` (what `AuditLog.record` writes), stamped with its pending MAC
    (`integrity.pending_mac`, what `record` does), checked and chained as `seal_pending` does it (`check_pending`, `sealed_mac`
    over the link to the previous entry) — in creation order, so seq follows occurred_at.
    The rows are then written with one multi-row INSERT per table per chunk (Core), which
    fires the rollup's triggers. Creation times cover the last year, increasing."""
    from paysvc.audit.integrity import (
        canonical,
        check_pending,
        fields_of,
        link_of,
        pending_mac,
        sealed_mac,
    )

    rng = random.Random(14)
    clock = AtClock()
    audit = AuditLog(clock)
    keyring = container.keyring
    now = dt.datetime.now(dt.UTC)
    step = dt.timedelta(days=365) / max(1, count)
    payments_table: Any = Payment.__table__
    audit_table: Any = AuditEntry.__table__
    began = time.perf_counter()
    chain_link = link(None, None)
    seq = 0

    for start in range(0, count, CHUNK):
        payment_rows, entry_rows = [], []
        entries: list[AuditEntry] = []
        for n in range(start, min(count, start + CHUNK)):
            created = now - dt.timedelta(days=365) + n * step
            payment = payment_row(n, created, rng)
            for field in Payment.__encrypted__.values():
                field.seal(payment, keyring)
            payment_rows.append(_columns(payment))
            clock.at = created
            entries.append(audit.entry(SERVICE, "payment.create", "payment", payment.id))
        for entry in entries:
            fields = fields_of(entry)
            entry.mac = pending_mac(keyring, keyring.active_id, fields)
            assert check_pending(keyring, entry.mac, fields) is None
            seq += 1
            entry.seq = seq
            entry.mac = sealed_mac(keyring, keyring.active_id, fields, seq, chain_link)
            chain_link = link_of(canonical(fields, seq))
            entry_rows.append(_columns(entry))

        async def work(
            session: Any, p: list[Any] = payment_rows, e: list[Any] = entry_rows
        ) -> None:
            await session.execute(insert(payments_table), p)
            await session.execute(insert(audit_table), e)

        await container.db.run(work)
        if (start // CHUNK) % 20 == 0:
            log(f"  built {start + CHUNK} payments ({time.perf_counter() - began:.0f} s)")
    sealed = await seal_pending(container.db, keyring)  # nothing left unsealed: checked here
    assert sealed == 0, sealed
    await container.db.optimize()  # SQLite: ANALYZE
    if not container.db.is_sqlite:  # what autovacuum does a while after such a load
        async with container.db.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.exec_driver_sql("VACUUM ANALYZE")
            # What the operator does after a bulk load (migration rollup_compact): CHUNK
            # payments per transaction left ~20 dead versions per rollup row, which payments
            # written one per transaction do not (their updates are pruned on the page).
            await connection.exec_driver_sql("CLUSTER payment_daily_totals")
    log(f"  built and sealed in {time.perf_counter() - began:.0f} s")


async def timed(work: Callable[[], Awaitable[Any]], repeat: int = 3) -> float:
    """Best of `repeat` runs, in ms (the machine is shared: the best is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        await work()
        best = min(best, time.perf_counter() - began)
    return round(best * 1000, 2)


async def cursor_at(
    container: Container, where: str, offset: int, table: str = "payments"
) -> str | None:
    order = "occurred_at" if table == "audit_entries" else "created_at"
    query = f"SELECT id FROM {table} {where} ORDER BY {order} DESC, id DESC LIMIT 1 OFFSET {offset}"  # noqa: S608

    async def read(session: Any) -> str | None:
        return await session.scalar(text(query))

    return await container.db.run(read, write=False)


async def pages(container: Container) -> dict[str, Any]:
    filters: dict[str, tuple[PaymentFilter, str]] = {
        "all": (PaymentFilter(), ""),
        "status=captured": (PaymentFilter(status="captured"), "WHERE status = 'captured'"),
        "status=pending": (PaymentFilter(status="pending"), "WHERE status = 'pending'"),
        "customer_id": (PaymentFilter(customer_id="cus_7"), "WHERE customer_id = 'cus_7'"),
        "status+customer": (
            PaymentFilter(customer_id="cus_7", status="captured"),
            "WHERE customer_id = 'cus_7' AND status = 'captured'",
        ),
    }
    out: dict[str, Any] = {}
    for name, (where, sql) in filters.items():
        deep = await cursor_at(container, sql, DEEP - 1)
        if deep is None:  # fewer rows than that in this filter: its last page
            count_sql = f"SELECT count(*) FROM payments {sql}"  # noqa: S608

            async def count(session: Any, q: str = count_sql) -> int:
                return int(await session.scalar(text(q)))

            total = await container.db.run(count, write=False)
            deep = await cursor_at(container, sql, max(0, total - 2))
        first = await timed(
            lambda w=where: container.payments.admin_list(ADMIN, w, limit=20, starting_after=None)
        )
        after = await timed(
            lambda w=where, d=deep: container.payments.admin_list(
                ADMIN, w, limit=20, starting_after=d
            )
        )
        out[f"payments {name}"] = {"first_ms": first, "deep_ms": after}
    for name, audit_where, sql in (
        ("all", AuditFilter(), ""),
        ("resource_id", AuditFilter(resource_id="x"), "WHERE resource_id = 'x'"),
    ):
        deep = await cursor_at(container, sql, DEEP - 1, "audit_entries")
        first = await timed(
            lambda f=audit_where: container.audit_trail.list(
                ADMIN, f, limit=20, starting_after=None
            )
        )
        after = await timed(
            lambda f=audit_where, d=deep: container.audit_trail.list(
                ADMIN, f, limit=20, starting_after=d
            )
        )
        out[f"audit {name}"] = {"first_ms": first, "deep_ms": after if deep else None}
    return out


async def analytics(container: Container) -> dict[str, float]:
    today = dt.datetime.now(dt.UTC).date()
    year = SummaryQuery(start=today - dt.timedelta(days=364), end=today)
    by_day = SummaryQuery(start=today - dt.timedelta(days=364), end=today, by_day=True)
    return {
        "year_ms": await timed(lambda: container.admin.transactions(ADMIN, year)),
        "year_by_day_ms": await timed(lambda: container.admin.transactions(ADMIN, by_day)),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_now() -> float:
    """CPU seconds of this process and of its finished children (verify's workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _cpu_seconds(pid: int) -> float:
    """CPU (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def startup(env: dict[str, str], work: Path) -> dict[str, float]:
    """Seconds from `paysvc serve` starting to /health answering 200, and the CPU seconds the
    server used until then (on a busy machine the wall time mostly waits for a CPU)."""
    port = free_port()
    began = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603
        [
            str(Path(sys.executable).parent / "paysvc"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=work,
    )
    try:
        async with aiohttp.ClientSession() as session:
            while time.perf_counter() - began < 600:
                if process.poll() is not None:
                    raise SystemExit(f"paysvc serve exited with {process.returncode}")
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health") as response:
                        if response.status == 200:
                            return {
                                "wall_s": round(time.perf_counter() - began, 2),
                                "cpu_s": round(_cpu_seconds(process.pid), 2),
                            }
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.02)
        raise SystemExit("paysvc serve did not become healthy in 600 s")
    finally:
        process.terminate()
        process.wait(timeout=60)


def _percentiles(latencies: list[float], prefix: str) -> dict[str, Any]:
    ordered = sorted(latencies) or [0.0]
    return {
        f"{prefix}writes": len(latencies),
        f"{prefix}write_p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
        f"{prefix}write_p99_ms": round(
            1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1
        ),
        f"{prefix}write_max_ms": round(1000 * ordered[-1], 1),
    }


async def _serving_writes(container: Container, until: Callable[[], bool]) -> list[float]:
    """Create intents through the service, one after another (10 ms apart), until `until()`;
    the latency of each, in seconds."""
    latencies: list[float] = []
    while not until():
        started = time.perf_counter()
        await container.payments.create_intent(
            SERVICE,
            NewIntent(
                order_id=f"serving-{secrets.token_hex(8)}",
                amount=100,
                currency="usd",
                customer_id="cus_1",
            ),
        )
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)
    return latencies


async def rotation(
    url: str, new: str, old: list[str], work: Path, limit: float | None = None
) -> dict[str, Any]:
    """`paysvc keys rotate` to key `new` in its own process; serving writes timed meanwhile,
    and for BASELINE_S seconds before it (the ceiling: the same writes with no rotation)."""
    rotated = build_container(settings(url, new, ",".join(old)))
    try:
        values = sum((await keys.status(rotated.db)).values())
        macs = sum((await keys.audit_key_usage(rotated.db)).values())
        pending = await keys.pending(rotated.db)  # rows and entries to rewrite
        quiet_until = time.perf_counter() + BASELINE_S
        baseline = await _serving_writes(rotated, lambda: time.perf_counter() > quiet_until)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "ENCRYPTION_KEY": new,
            "ENCRYPTION_KEYS_RETIRED": ",".join(old),
            **SECRETS,
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "paysvc"),
            "keys",
            "rotate",
            env=env,
            cwd=work,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        waiting = asyncio.create_task(process.wait())

        def over() -> bool:
            if limit is not None and time.perf_counter() - began > limit and not waiting.done():
                process.terminate()  # rotation is resumable: the next run finishes it
            return waiting.done()

        latencies = await _serving_writes(rotated, over)
        _, errors = await process.communicate()
        wall = time.perf_counter() - began
        stopped = limit is not None and process.returncode == -signal.SIGTERM
        if process.returncode != 0 and not stopped:
            raise SystemExit(f"keys rotate failed: {errors.decode()[-2000:]}")
        # What the stopped rotation and the serving writes recorded: sealed as a server's
        # sealer would (this process runs none), so the kept database verifies next time.
        await seal_pending(rotated.db, rotated.keyring)
        left = await keys.pending(rotated.db)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "values": values,
            "audit_macs": macs,
            "wall_s": round(wall, 1),
            "stopped_after_limit": stopped,
            "rewritten": pending - left,  # rows and audit entries
            "rewritten_per_s": round((pending - left) / wall, 1),
            "rotate_cpu_s": round(
                usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime, 1
            ),
            **_percentiles(latencies, "serving_"),
            **_percentiles(baseline, "baseline_"),
        }
    finally:
        await rotated.close()


PHASES = ("pages", "analytics", "verify", "startup", "rotation")


def _keys(state: dict[str, Any]) -> tuple[str, str]:
    """The active key and the retired ones (comma-separated) of a built database."""
    return state["active"], ",".join(state["retired"])


async def run(
    backend: str,
    url: str,
    count: int,
    work: Path,
    log: Callable[[str], None],
    state_file: Path | None = None,
    phases: tuple[str, ...] = PHASES,
    rotation_limit: float | None = None,
) -> dict[str, Any]:
    """Build (unless `state_file` says this database is built), then time each phase.

    `state_file` keeps the database's keys and size between runs (`--keep`), so a big
    database is built once and timed many times; rotation updates the keys in it."""
    state: dict[str, Any] = {}
    if state_file is not None and state_file.exists():
        state = json.loads(state_file.read_text())
    result: dict[str, Any] = {"backend": backend, "payments": state.get("payments", count)}
    if not state:
        state = {
            "payments": count,
            "active": base64.b64encode(secrets.token_bytes(32)).decode(),
            "retired": [],
        }
        await asyncio.to_thread(migrate.upgrade, url)  # Alembic runs its own event loop
        container = build_container(settings(url, *_keys(state)))
        try:
            log(f"{backend}: building {count} payments")
            began = time.perf_counter()
            await build(container, count, log)
            result["build_s"] = round(time.perf_counter() - began, 1)
        finally:
            await container.close()
        if state_file is not None:
            state_file.write_text(json.dumps(state))
    container = build_container(settings(url, *_keys(state)))
    try:
        if "pages" in phases:
            log(f"{backend}: pages")
            result["pages"] = await pages(container)
        if "analytics" in phases:
            log(f"{backend}: analytics")
            result["analytics"] = await analytics(container)
        if "verify" in phases:
            log(f"{backend}: audit verify")
            began, cpu = time.perf_counter(), _cpu_now()
            verified = await verify(container.db, container.keyring, workers=os.cpu_count() or 1)
            wall, cpu = time.perf_counter() - began, _cpu_now() - cpu
            await save_checkpoint(container.db, container.keyring, verified)
            began = time.perf_counter()
            resumed = await verify(container.db, container.keyring, from_checkpoint=True)
            result["audit_verify"] = {
                "entries": verified.checked,
                "ok": verified.ok,
                "workers": os.cpu_count() or 1,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 1),  # this process and the worker processes together
                "from_checkpoint_ok": resumed.ok,
                "from_checkpoint_wall_s": round(time.perf_counter() - began, 2),
            }
    finally:
        await container.close()
    if "startup" in phases:
        log(f"{backend}: start-up")
        active, retired = _keys(state)
        env = {"DATABASE_URL": url, "ENCRYPTION_KEY": active, "ENCRYPTION_KEYS_RETIRED": retired}
        result["startup"] = await startup({**env, **SECRETS}, work)
        # The ceiling, in the same run: the same start-up on an empty, migrated database.
        empty = f"sqlite:///{work}/empty.db"
        await asyncio.to_thread(migrate.upgrade, empty)
        empty_env = {**env, "DATABASE_URL": empty, **SECRETS}
        result["startup_empty"] = await startup(empty_env, work)
    if "rotation" in phases:
        log(f"{backend}: key rotation")
        new = base64.b64encode(secrets.token_bytes(32)).decode()
        old = [state["active"], *state["retired"]]
        result["rotation"] = await rotation(url, new, old, work, rotation_limit)
        state = {**state, "active": new, "retired": [state["active"], *state["retired"]]}
        if state_file is not None:
            state_file.write_text(json.dumps(state))
    return result


def report(result: dict[str, Any], log: Callable[[str], None]) -> None:
    built = f" (built in {result['build_s']} s)" if "build_s" in result else ""
    log(f"\n== {result['backend']}, {result['payments']} payments{built}")
    for name, page in result.get("pages", {}).items():
        log(
            f"  page {name:<28} first {page['first_ms']:>8} ms   after 50k {page['deep_ms']!s:>8} ms"
        )
    if "analytics" in result:
        a = result["analytics"]
        log(
            f"  analytics over a year        {a['year_ms']:>8} ms   by day {a['year_by_day_ms']} ms"
        )
    if "audit_verify" in result:
        v = result["audit_verify"]
        log(
            f"  audit verify                 {v['entries']} entries, ok={v['ok']}, {v['wall_s']} s "
            f"({v['workers']} processes, {v['cpu_s']} s CPU in all); from the checkpoint it saved: ok={v['from_checkpoint_ok']}"
            f", {v['from_checkpoint_wall_s']} s"
        )
    if "rotation" in result:
        r = result["rotation"]
        log(
            f"  key rotation                 {r['values']} values + {r['audit_macs']} audit MACs; "
            f"{r['rewritten']} rows/entries rewritten in {r['wall_s']} s "
            f"({r['rewritten_per_s']}/s{', stopped at the limit' if r['stopped_after_limit'] else ''}); "
            f"serving writes p50 {r['serving_write_p50_ms']} ms, p99 {r['serving_write_p99_ms']} "
            f"ms, max {r['serving_write_max_ms']} ms ({r['serving_writes']}); the same writes "
            f"without rotation: p99 {r['baseline_write_p99_ms']} ms ({r['baseline_writes']}); "
            f"rotate CPU {r['rotate_cpu_s']} s"
        )
    if "startup" in result:
        up, empty = result["startup"], result["startup_empty"]
        log(
            f"  start-up                     {up['wall_s']} s, {up['cpu_s']} s CPU (an empty "
            f"database, same run: {empty['wall_s']} s, {empty['cpu_s']} s CPU)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="Build the databases into DIR and keep them (and their keys); a later run with "
        "the same DIR reuses them instead of building again (PostgreSQL: the scratch database "
        "is kept, its URL in DIR)",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"Comma-separated subset of {','.join(PHASES)}",
    )
    parser.add_argument(
        "--rotation-seconds",
        type=float,
        help="Stop `keys rotate` after this long (it is resumable) and report its rate",
    )
    args = parser.parse_args()
    phases = tuple(p for p in args.phases.split(",") if p)
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="paysvc-growth-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        kept = args.keep is not None

        def measure(backend: str, url: str, state: Path | None) -> None:
            results.append(
                asyncio.run(
                    run(
                        backend, url, args.payments, work, log, state, phases, args.rotation_seconds
                    )
                )
            )

        if args.backend in ("sqlite", "both"):
            measure("sqlite", f"sqlite:///{work}/growth.db", work / "sqlite.json" if kept else None)
        base = os.environ.get("PAYSVC_TEST_DATABASE_URL")
        if args.backend in ("postgresql", "both") and base:
            state = work / "postgresql.json" if kept else None
            url_file = work / "postgresql.url"
            if kept and url_file.exists() and state is not None and state.exists():
                url = url_file.read_text().strip()
            else:
                url = pg_scratch.create(base, prefix="paysvc_growth")
                if kept:
                    url_file.write_text(url)
            try:
                measure("postgresql", url, state)
            finally:
                if not kept:
                    pg_scratch.drop(url)
        elif args.backend == "postgresql":
            raise SystemExit("--backend postgresql needs PAYSVC_TEST_DATABASE_URL")
    for result in results:
        report(result, log)
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
