"""A platform in a box (run `scripts/platform-demo`): paysvc with a tiny order service and
notification sink (tests/platform_peers.py) on free local ports. One order goes through
intent -> confirm -> partial refund -> order cancel; then it prints what each peer received,
every Standard Webhooks signature verified by the peer. Exits non-zero on any failure."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.platform_peers import Peers  # noqa: E402

ORDER = {"id": 1042, "user_id": 17, "total": 19.99, "currency": "USD", "status": "PENDING"}
EXPECTED = {"order": 8, "notification": 3, "order-status": 1}
READY_DEADLINE = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def paysvc(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(ROOT / "scripts" / "paysvc"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"platform-demo: paysvc {' '.join(args)} failed: {err.decode()}")
    return out.decode().strip()


async def main() -> int:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    peers = Peers(secret, orders={"1042": ORDER})
    runner = web.AppRunner(peers.app())
    await runner.setup()
    peer_port, port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", peer_port).start()
    peer_url, base = f"http://127.0.0.1:{peer_port}", f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as work:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PAYSVC_", "DATABASE"))},
            "DATABASE_URL": f"sqlite:///{work}/paysvc.db",
            "ORDER_SERVICE_URL": peer_url,
            "NOTIFICATION_SERVICE_URL": peer_url,
            "ORDER_VALIDATION": "strict",
            "EVENTS_DESTINATIONS": "order,notification,order-status",
            "ORDER_SERVICE_TOKEN": "demo-order-service-token",
            "EVENTS_SIGNING_SECRET": secret,
            "PAYMENT_GATEWAY": "sandbox",
            "LOG_LEVEL": "WARNING",
        }
        for name in ("JWT_SECRET_KEY", "ENCRYPTION_KEY", "STRIPE_SECRET_KEY"):
            env.pop(name, None)
        failed = False
        server = await asyncio.create_subprocess_exec(
            str(ROOT / "scripts" / "serve"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=env,
            cwd=work,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert server.stderr is not None
        server_log = asyncio.create_task(server.stderr.read())
        try:
            async with aiohttp.ClientSession() as http:
                await wait_ready(http, base, server)
                customer = await paysvc(env, "token", "mint", "--sub", "17", "--role", "customer")
                service = await paysvc(env, "token", "mint", "--sub", "orders", "--role", "service")
                await walk(http, base, customer, service)
                await peers.wait_for(
                    lambda p: all(len(p.events(d)) >= n for d, n in EXPECTED.items()),
                    "every event",
                )
            report(peers)
        except BaseException:
            failed = True
            raise
        finally:
            if server.returncode is None:
                server.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(60):
                        await server.wait()
                except TimeoutError:
                    server.kill()
                    await server.wait()
            logged = (await server_log).decode()
            await runner.cleanup()
            if failed or server.returncode not in (0, -signal.SIGTERM):
                print(f"platform-demo: FAILED; paysvc log:\n{logged[-4000:]}", file=sys.stderr)
    bad = [r for r in peers.received if not r.verified]
    return 1 if bad else 0


async def wait_ready(
    http: aiohttp.ClientSession, base: str, server: asyncio.subprocess.Process
) -> None:
    async with asyncio.timeout(READY_DEADLINE):
        while True:
            if server.returncode is not None:
                raise SystemExit("platform-demo: paysvc exited during start-up")
            try:
                async with http.get(f"{base}/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


async def call(
    http: aiohttp.ClientSession, method: str, url: str, token: str, body: Any, expect: int
) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.request(method, url, json=body, headers=headers) as response:
        data = await response.json()
        if response.status != expect:
            raise SystemExit(f"platform-demo: {method} {url} -> {response.status}: {data}")
        return data


async def walk(http: aiohttp.ClientSession, base: str, customer: str, service: str) -> None:
    intent = {
        "order_id": "1042",
        "amount": 1999,
        "currency": "usd",
        "receipt_email": "customer@example.com",
    }
    payment = await call(http, "POST", f"{base}/payments/intents", customer, intent, 201)
    pay = payment["id"]
    print(f"paysvc   intent {pay} for order 1042 (validated with the order service): pending")
    confirmed = await call(
        http,
        "POST",
        f"{base}/payments/{pay}/confirm",
        customer,
        {"payment_method": "pm_card_visa"},
        200,
    )
    print(f"paysvc   confirm: {confirmed['status']} {confirmed['amount_captured']}")
    refund = await call(
        http, "POST", f"{base}/payments/{pay}/refunds", service, {"amount": 500}, 201
    )
    print(f"paysvc   partial refund {refund['id']}: {refund['status']} {refund['amount']}")
    cancelled = await call(
        http,
        "POST",
        f"{base}/orders/1042/cancel",
        service,
        {"reason": "requested_by_customer"},
        200,
    )
    (after,) = cancelled["payments"]
    print(
        f"paysvc   order 1042 cancelled: payment {after['status']}, "
        f"{after['amount_refunded']} of {after['amount_captured']} refunded\n"
    )


def report(peers: Peers) -> None:
    for destination in ("order", "notification", "order-status"):
        got = [r for r in peers.received if r.destination == destination]
        print(f"{destination} service received {len(got)}:")
        for r in got:
            mark = "signature ok" if r.verified else "SIGNATURE BAD"
            what = r.json.get("type") or r.json
            email = " (with the receipt email)" if "receipt_email" in r.json else ""
            print(f"  {r.method:4} {r.path:32} {r.webhook_id:28} {what}{email} [{mark}]")
        print()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
