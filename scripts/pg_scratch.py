#!/usr/bin/env python3
"""Create or drop a scratch PostgreSQL database beside a base URL (for scripts/test and
scripts/bench_confirm.py).

    scripts/pg_scratch.py create postgresql://postgres@127.0.0.1:5432/test   # prints the new URL
    scripts/pg_scratch.py drop postgresql://postgres@127.0.0.1:5432/paysvc_scratch_ab12cd34
"""

from __future__ import annotations

import asyncio
import secrets
import sys

import asyncpg
from sqlalchemy.engine import make_url


async def _admin(url: str, statement: str) -> None:
    target = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(target.replace("postgresql://", "postgres://", 1))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def create(base_url: str, prefix: str = "paysvc_scratch") -> str:
    """A new empty database on the server of `base_url`; returns its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    asyncio.run(_admin(base_url, f'CREATE DATABASE "{name}"'))
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def drop(url: str) -> None:
    parsed = make_url(url)
    name = parsed.database or ""
    if not name.startswith("paysvc_"):
        raise SystemExit(f"refusing to drop {name!r}: not a paysvc scratch database")
    admin = parsed.set(database="postgres").render_as_string(hide_password=False)
    asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("create", "drop"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "create":
        print(create(sys.argv[2]))
    else:
        drop(sys.argv[2])
