"""Run Alembic programmatically (CLI `paysvc db`, `paysvc serve`, tests)."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str, output: io.StringIO | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"), stdout=output or io.StringIO())
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str:
    output = io.StringIO()
    command.current(alembic_config(url, output))
    return output.getvalue().strip()
