"""Run Alembic programmatically (CLI `paysvc db`, `paysvc serve`, tests)."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config

from paysvc.keys.keyring import Keyring

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(
    url: str, output: io.StringIO | None = None, keyring: Keyring | None = None
) -> Config:
    """`keyring` (the service keys) lets a data migration encrypt or decrypt stored values;
    `migration_keyring()` in a revision refuses to touch such rows without it."""
    config = Config(str(ROOT / "alembic.ini"), stdout=output or io.StringIO())
    config.attributes["url"] = url
    config.attributes["keyring"] = keyring
    return config


def upgrade(url: str, revision: str = "head", keyring: Keyring | None = None) -> None:
    command.upgrade(alembic_config(url, keyring=keyring), revision)


def downgrade(url: str, revision: str, keyring: Keyring | None = None) -> None:
    command.downgrade(alembic_config(url, keyring=keyring), revision)


def current(url: str) -> str:
    output = io.StringIO()
    command.current(alembic_config(url, output))
    return output.getvalue().strip()
