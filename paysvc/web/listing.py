"""List endpoints: one page from a service, rendered in the list envelope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from aiohttp import web

from paysvc.auth.principal import Actor
from paysvc.db.pagination import Page
from paysvc.web.io import actor, json_response, list_body
from paysvc.web.keys import QUERY

W_contra = TypeVar("W_contra", contravariant=True)
T_co = TypeVar("T_co", covariant=True)


class Lister(Protocol[W_contra, T_co]):
    """A service's `list`: one page for an actor, a filter (or a parent id) and a cursor."""

    def __call__(
        self, actor: Actor, where: W_contra, /, *, limit: int, starting_after: str | None
    ) -> Awaitable[Page[T_co]]: ...


async def list_response(
    request: web.Request,
    lister: Lister[W_contra, T_co],
    where: W_contra,
    render: Callable[[T_co], dict[str, Any]],
) -> web.Response:
    """A list endpoint: the page `lister` returns for the query's `limit` and `starting_after`
    (validated by `with_query`), rendered item by item in the list envelope."""
    query = request[QUERY]
    page = await lister(
        actor(request), where, limit=query["limit"], starting_after=query["starting_after"]
    )
    return json_response(list_body([render(item) for item in page.items], page.has_more))
