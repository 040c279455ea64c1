"""The configured gateways: a failover chain takes new payments; a payment stays with its own."""

from __future__ import annotations

from paysvc.gateways.base import Gateway
from paysvc.gateways.failover import FailoverGateway
from paysvc.gateways.sandbox import SandboxGateway


class Gateways:
    def __init__(self, chain: FailoverGateway, sandbox: SandboxGateway | None = None) -> None:
        self.primary: Gateway = chain  # takes new payments, in PAYMENT_GATEWAY order
        self._chain = chain
        # The sandbox itself (not its wrappers), for its 3-D Secure page; None without it.
        self.sandbox = sandbox

    def for_payment(self, name: str) -> Gateway:
        """A payment stays with the gateway that took it for every later operation."""
        return self._chain.gateway_for(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(gateway.name for gateway in self._chain.gateways)

    async def health(self) -> dict[str, str]:
        """Each gateway's status and the `active` one (`none` when no gateway would charge)."""
        return await self._chain.health()

    async def close(self) -> None:
        await self._chain.close()
