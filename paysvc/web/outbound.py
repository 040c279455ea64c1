"""Calls to the platform's other services over one shared aiohttp.ClientSession: event
deliveries (the dispatcher's transport) and order lookups (order validation)."""

from __future__ import annotations

import functools
import json
import time
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import aiohttp

from paysvc.events.dispatcher import Answer, Outgoing
from paysvc.orders.validation import LOOKUP_TIMEOUT, OrderServiceDown

_LOADS = functools.partial(json.loads, parse_float=Decimal)  # 40.0 stays exact


class PlatformClient:
    def __init__(self, order_service_url: str) -> None:
        self.order_service_url = order_service_url
        # No cookies (every call stands alone); pooled connections for every peer.
        self.session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def send(self, request: Outgoing) -> Answer:
        """One delivery attempt: the status code, or what went wrong, and how long it took."""
        started = time.perf_counter()
        try:
            async with self.session.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                timeout=aiohttp.ClientTimeout(total=request.timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                return Answer(response.status, None, _ms(started))
        except TimeoutError:
            return Answer(None, f"timeout after {request.timeout:g} s", _ms(started))
        except aiohttp.ClientConnectorError:
            return Answer(None, "connection failed", _ms(started))
        except aiohttp.ClientError as error:
            return Answer(None, type(error).__name__, _ms(started))

    async def fetch(self, order_id: str, authorization: str | None) -> tuple[int, Any]:
        """`GET {ORDER_SERVICE_URL}/orders/{order_id}` with the caller's token (5 s)."""
        headers = {"Accept": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        url = f"{self.order_service_url}/orders/{quote(order_id, safe='')}"
        try:
            async with self.session.get(
                url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=LOOKUP_TIMEOUT),
                allow_redirects=False,
            ) as response:
                if response.status >= 500:
                    raise OrderServiceDown(f"answer {response.status}")
                if response.status != 200:
                    return response.status, None
                return 200, await response.json(loads=_LOADS, content_type=None)
        except TimeoutError:
            raise OrderServiceDown(f"no answer within {LOOKUP_TIMEOUT:g} s") from None
        except aiohttp.ClientError:
            raise OrderServiceDown("unreachable") from None
        except ValueError:
            raise OrderServiceDown("not JSON") from None

    async def close(self) -> None:
        await self.session.close()


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
