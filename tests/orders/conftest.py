"""Orders tests run against the same peers as the events tests (an order service)."""

from tests.events.conftest import clock, container, peer_server, peer_url, peers, settings

__all__ = ["clock", "container", "peer_server", "peer_url", "peers", "settings"]
