"""Typed keys for application and request state."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from paysvc.auth.principal import Actor
from paysvc.bootstrap import Container

CONTAINER = web.AppKey("container", Container)
ACTOR = web.RequestKey("actor", Actor)
REQUEST_ID = web.RequestKey("request_id", str)
BODY = web.RequestKey("body", dict[str, Any])
QUERY = web.RequestKey("query", dict[str, Any])
