"""TLS: the server context (TLS 1.3 minimum), one request over HTTPS in process, and
`paysvc serve` itself over HTTPS with its JSON logs checked for secrets."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from asyncio.subprocess import Process
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cli.serve import tls_context
from paysvc.bootstrap import Container
from paysvc.web.app import create_app
from tests.conftest import ENCRYPTION_KEY, EVENTS_SECRET, JWT_SECRET, token

ROOT = Path(__file__).resolve().parents[2]
EMAIL = "dave.tls@example.net"
STARTUP_DEADLINE = 180  # seconds; polled, so a fast start costs nothing


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


def client_context(cert_file: str, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cert_file)
    if maximum is not None:
        context.maximum_version = maximum
    return context


def test_server_context_requires_tls_1_3(certificate: tuple[str, str]) -> None:
    context = tls_context(*certificate)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER


async def test_one_request_over_https(certificate: tuple[str, str], container: Container) -> None:
    server = TestServer(create_app(container, own_container=False), scheme="https")
    await server.start_server(ssl=tls_context(*certificate))
    try:
        url = str(server.make_url("/health"))
        async with aiohttp.ClientSession() as session:
            async with session.get(url, ssl=client_context(certificate[0])) as response:
                assert response.status == 200
                assert (await response.json())["status"] == "ok"
            old = client_context(certificate[0], maximum=ssl.TLSVersion.TLSv1_2)
            with pytest.raises(aiohttp.ClientConnectorError):
                await session.get(url, ssl=old)
        assert server.port is not None
        _, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=client_context(certificate[0])
        )
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
        writer.close()
        await writer.wait_closed()
    finally:
        await server.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def wait_until_up(url: str, context: ssl.SSLContext, process: Process) -> None:
    """Poll until the server answers: a loaded machine may take long to import and migrate, so
    the deadline is generous (it only matters when the server never comes up)."""
    deadline = time.monotonic() + STARTUP_DEADLINE
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.returncode is None, "paysvc serve exited"
            try:
                async with session.get(url, ssl=context) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectorError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"paysvc serve did not come up within {STARTUP_DEADLINE} s")


async def test_paysvc_serve_over_https_logs_json_without_secrets(
    certificate: tuple[str, str], database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "JWT_SECRET_KEY": JWT_SECRET,
        "ENCRYPTION_KEY": ENCRYPTION_KEY,
        "EVENTS_SIGNING_SECRET": EVENTS_SECRET,
        "PAYMENT_GATEWAY": "sandbox",
        "TLS_CERT_FILE": certificate[0],
        "TLS_KEY_FILE": certificate[1],
    }
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *(
                sys.executable,
                "-m",
                "cli.main",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            base = f"https://127.0.0.1:{port}"
            context = client_context(certificate[0])
            await wait_until_up(f"{base}/health", context, process)
            bearer = token("17")
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"{base}/payments/intents",
                    json={
                        "order_id": "1",
                        "amount": 100,
                        "currency": "usd",
                        "receipt_email": EMAIL,
                    },
                    headers={"Authorization": f"Bearer {bearer}"},
                    ssl=context,
                ) as response:
                    assert response.status == 201
                    assert response.headers["Server"] == "paysvc"
                    request_id = response.headers["X-Request-Id"]
                async with session.get(
                    f"{base}/payments?order_id={EMAIL}",
                    headers={"Authorization": "Bearer x"},
                    ssl=context,
                ) as response:
                    assert response.status == 401
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout=STARTUP_DEADLINE)
    output = log_file.read_text()
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "paysvc.access"]
    created = next(a for a in access if a["route"] == "/payments/intents")
    assert (created["method"], created["status"], created["request_id"]) == (
        "POST",
        201,
        request_id,
    )
    assert any(a["route"] == "/payments" and a["status"] == 401 for a in access)
    assert not any(line["logger"] == "aiohttp.access" for line in lines)
    for secret in (bearer, EMAIL, "Bearer x", "order_id="):
        assert secret not in output
