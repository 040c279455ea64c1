"""Orders tests run against the same peers as the events tests (an order service)."""

from tests.events.conftest import peer_server, peer_url, peers, settings

__all__ = ["peer_server", "peer_url", "peers", "settings"]
