"""Events tests: paysvc with real HTTP peers (an order service and a notification sink)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from paysvc.bootstrap import Container
from paysvc.config import Settings
from tests.conftest import EVENTS_SECRET, make_settings
from tests.platform_peers import Peers


@pytest.fixture
async def peer_server(aiohttp_server: Callable[..., Any]) -> TestServer:
    peers = Peers(EVENTS_SECRET)
    server: TestServer = await aiohttp_server(peers.app(), host="127.0.0.1")
    server.app["peers"] = peers
    return server


@pytest.fixture
def peers(peer_server: TestServer) -> Peers:
    found: Peers = peer_server.app["peers"]
    return found


@pytest.fixture
def peer_url(peer_server: TestServer) -> str:
    return str(peer_server.make_url("")).rstrip("/")


@pytest.fixture
def settings(database_url: str, peer_url: str) -> Settings:
    return make_settings(
        database_url, ORDER_SERVICE_URL=peer_url, NOTIFICATION_SERVICE_URL=peer_url
    )


def wake(container: Container) -> None:
    """Nudge the running app's dispatcher (as a commit that wrote events does)."""
    assert container.outbox.on_commit is not None, "the app is not running"
    container.outbox.on_commit()
