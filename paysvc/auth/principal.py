"""Who is acting: the authenticated principal plus where the request came from."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from paysvc.errors import NotFound


class Role(enum.StrEnum):
    CUSTOMER = "customer"
    SERVICE = "service"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Actor:
    id: str
    role: Role
    origin: str = "cli"  # client IP, or "cli"
    request_id: str | None = None

    @property
    def is_staff(self) -> bool:
        """Service and admin principals act on any customer's payments."""
        return self.role in (Role.SERVICE, Role.ADMIN)

    def require_owner(self, customer_id: str, resource: str) -> None:
        """A customer touching someone else's resource sees exactly what a missing one shows."""
        if not self.is_staff and customer_id != self.id:
            raise NotFound(f"No such {resource}", param="id")


SYSTEM = Actor(id="system", role=Role.ADMIN, origin="system")
