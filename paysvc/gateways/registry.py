"""The configured gateways: which one takes new payments, and each payment's own gateway."""

from __future__ import annotations

from paysvc.gateways.base import Gateway


class Gateways:
    def __init__(self, primary: Gateway, by_name: dict[str, Gateway]) -> None:
        self.primary = primary  # takes new payments (may be a failover chain)
        self._by_name = by_name

    def for_payment(self, name: str) -> Gateway:
        """A payment stays with the gateway that took it for every later operation."""
        return self._by_name[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    async def close(self) -> None:
        for gateway in self._by_name.values():
            await gateway.close()
