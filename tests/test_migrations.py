"""The Alembic migrations users run: empty -> head -> base -> head, one step at a time too,
with no drift between the models and the migrated schema, on the current backend."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from paysvc.db import migrate
from paysvc.db.engine import create_engine
from paysvc.db.models import metadata
from tests.conftest import BACKEND, _pg_admin


@pytest.fixture
def empty_url(tmp_path: Path) -> Iterator[str]:
    """A brand-new, empty database on the backend under test."""
    if BACKEND != "postgresql":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    admin = make_url(os.environ["PAYSVC_TEST_DATABASE_URL"]).set(drivername="postgresql")
    admin_url = admin.render_as_string(hide_password=False)
    name = "paysvc_migrations_" + secrets.token_hex(4)
    asyncio.run(_pg_admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_admin(admin_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


def tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                names = await connection.run_sync(lambda c: inspect(c).get_table_names())
        finally:
            await engine.dispose()
        return set(names) - {"alembic_version"}

    return asyncio.run(read())


def revisions(url: str) -> list[str]:
    """Every revision, base first."""
    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def head(url: str) -> str:
    return ScriptDirectory.from_config(migrate.alembic_config(url)).get_current_head() or ""


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    expected = set(metadata.tables)
    assert tables(empty_url) == set()
    migrate.upgrade(empty_url)
    assert migrate.current(empty_url).startswith(head(empty_url))
    assert tables(empty_url) == expected
    command.check(migrate.alembic_config(empty_url))  # models and migrations agree

    migrate.downgrade(empty_url, "base")
    assert tables(empty_url) == set()
    assert migrate.current(empty_url) == ""

    migrate.upgrade(empty_url)
    assert tables(empty_url) == expected
    command.check(migrate.alembic_config(empty_url))


def test_every_revision_upgrades_and_downgrades_on_its_own(empty_url: str) -> None:
    steps = revisions(empty_url)
    assert steps, "no migrations found"
    for revision in steps:
        migrate.upgrade(empty_url, revision)
        assert migrate.current(empty_url).startswith(revision)
    for _ in steps:
        migrate.downgrade(empty_url, "-1")
    assert tables(empty_url) == set()


def test_file_names_sort_in_chain_order(tmp_path: Path) -> None:
    """`ls migrations/versions` reads as the upgrade order (the ids are older than this rule)."""
    script = ScriptDirectory.from_config(migrate.alembic_config(f"sqlite:///{tmp_path}/x.db"))
    chain = [Path(rev.path).name for rev in reversed(list(script.walk_revisions()))]
    assert chain == sorted(chain)
