"""Slow and greedy clients: deadlines for a request's headers and body, and a cap on the
concurrent connections of one client IP.

- **Headers** (`REQUEST_TIMEOUT`, default 10 s): a connection must deliver a complete request
  line and headers within that time of being opened or of its previous response; otherwise it
  is closed. This is aiohttp's keep-alive timer, which runs from connection start and from each
  response and closes a connection still waiting for a complete request; `GuardedHandler` only
  adds the one log line when the connection had sent part of a request (an idle keep-alive
  connection closing is normal and not logged). Behind a reverse proxy, its upstream keep-alive
  must be shorter than this (see README).
- **Body** (`body_deadline` middleware, same `REQUEST_TIMEOUT`): once the headers are in, the
  whole body (at most 64 KiB) must arrive within the deadline, else 408 `request_timeout` in
  the contract's error shape and the connection is closed. The body is read up front, before
  anything else looks at it (it is cached; handlers read the same bytes).
- **Connections per client IP** (`MAX_CONNECTIONS_PER_IP`, default 100; 0 = no cap): a new
  connection beyond the cap is closed at once. Behind a proxy every connection comes from the
  proxy: raise the cap or turn it off and let the proxy cap per client.

Each aborted client is one warning line (client IP, `reason`: header_timeout, body_timeout,
client_gone, connection_cap) and never a traceback. The header
deadline and the connection cap live in the connection layer, so they apply when serving through
`run()` (`paysvc serve`); the body deadline is a middleware and applies everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from paysvc.errors import MalformedRequest, PaysvcError
from paysvc.web.io import Handler, container
from paysvc.web.middlewares import render_error

log = logging.getLogger("paysvc.web.clients")


class RequestTimeout(PaysvcError):
    type = "invalid_request_error"
    code = "request_timeout"
    http_status = 408


def _client(transport: Any) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.body_exists:
        timeout = container(request).settings.request_timeout
        try:
            await asyncio.wait_for(request.read(), timeout=timeout)
        except TimeoutError:
            log.warning(
                "client too slow sending its request body; 408, connection closed",
                extra={"client": request.remote or "unknown", "reason": "body_timeout"},
            )
            response = render_error(
                request, RequestTimeout(f"The request body did not arrive within {timeout:g} s")
            )
            response.force_close()
            return response
        except ConnectionError:
            log.warning(
                "client went away while sending its request body",
                extra={"client": request.remote or "unknown", "reason": "client_gone"},
            )
            response = render_error(request, MalformedRequest("The request body was cut off"))
            response.force_close()  # nobody is there to read it; the access line says 400
            return response
    return await handler(request)


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol plus: which connections hold a partial request (for the
    log line when the header deadline closes them)."""

    partial_since: float | None = None  # bytes of a request arrived, its headers not complete
    in_request = False  # a complete request is being handled (set by `mark_request`)
    over_cap = False  # set by GuardedServer.connection_made: refuse this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.over_cap:
            self.force_close()  # the request loop sees it and ends; nothing is read

    def data_received(self, data: bytes) -> None:
        if self.partial_since is None and not self.in_request:
            self.partial_since = self._loop.time()
        super().data_received(data)

    def _process_keepalive(self) -> None:  # aiohttp's deadline for an idle/partial connection
        partial = self.partial_since is not None and not self.in_request
        client = _client(self.transport)
        super()._process_keepalive()
        if partial and self.transport is None:  # closed just now
            log.warning(
                "client did not send complete request headers in time; connection closed",
                extra={"client": client, "reason": "header_timeout"},
            )


@web.middleware
async def mark_request(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tells the connection a complete request arrived (headers are in), and when it is done."""
    protocol = request.protocol
    if isinstance(protocol, GuardedHandler):
        protocol.in_request = True
        protocol.partial_since = None
    try:
        return await handler(request)
    finally:
        if isinstance(protocol, GuardedHandler):
            protocol.in_request = False
            protocol.partial_since = None


class GuardedServer(web.Server):
    """aiohttp's connection factory, making `GuardedHandler`s and capping connections per IP."""

    max_per_ip = 0
    per_ip: Counter[str]
    clients: dict[RequestHandler, str]

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        client = self.clients[handler] = _client(transport)
        self.per_ip[client] += 1
        if self.max_per_ip and self.per_ip[client] > self.max_per_ip:
            log.warning(
                "too many concurrent connections from one client; connection closed",
                extra={"client": client, "reason": "connection_cap", "cap": self.max_per_ip},
            )
            if isinstance(handler, GuardedHandler):
                handler.over_cap = True

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        client = self.clients.pop(handler, None)
        if client is None:
            return
        self.per_ip[client] -= 1
        if self.per_ip[client] <= 0:
            del self.per_ip[client]


class GuardedAppRunner(web.AppRunner):
    def __init__(self, app: web.Application, *, max_per_ip: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.max_per_ip = max_per_ip

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = GuardedServer  # same object and state, our connection hooks
        assert isinstance(server, GuardedServer)
        server.max_per_ip = self.max_per_ip
        server.per_ip = Counter()
        server.clients = {}
        return server


async def start(
    app: web.Application,
    host: str,
    port: int,
    *,
    request_timeout: float,
    max_connections_per_ip: int,
    ssl_context: Any = None,
) -> tuple[GuardedAppRunner, list[socket.socket]]:
    """Serve `app` with the guards; returns the runner (call `cleanup()`) and bound sockets."""
    runner = GuardedAppRunner(
        app,
        max_per_ip=max_connections_per_ip,
        keepalive_timeout=request_timeout,  # the header deadline (see the module docstring)
        # After an answer given before the body was complete (408, 413), aiohttp keeps reading
        # the rest for `lingering_time` (10 s by default): a slow client would keep its slot.
        lingering_time=min(1.0, request_timeout),
        access_log=None,  # our own access log line (request id, route template, no query)
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    server = site._server
    sockets = list(getattr(server, "sockets", None) or [])
    return runner, sockets
