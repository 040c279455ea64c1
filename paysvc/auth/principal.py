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

    def require_owner(self, customer_id: str, resource: str, resource_id: str) -> None:
        """A customer touching someone else's resource sees exactly what a missing one shows
        (the web layer audits the denial from `denied`)."""
        if not self.is_staff and customer_id != self.id:
            error = NotFound(f"No such {resource}", param="id")
            error.denied = (resource, resource_id)
            raise error


SYSTEM = Actor(id="system", role=Role.ADMIN, origin="system")
