"""What a server process keeps in memory: no Alembic (migrations run in a child process), no
Stripe SDK unless Stripe is configured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from paysvc.db import migrate
from paysvc.errors import ConfigError

PROBE = """
import sys
import cli.main
from paysvc.bootstrap import build_container
from tests.conftest import make_settings
build_container(make_settings(sys.argv[1]))
print(",".join(m for m in ("alembic", "stripe") if m in sys.modules))
"""


def test_the_serving_process_loads_neither_alembic_nor_stripe(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/probe.db"
    migrate.upgrade_in_subprocess(url)
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", PROBE, url],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == ""
    assert migrate.current(url)  # the child did migrate


def test_a_failed_migration_in_the_child_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(ConfigError) as raised:
        migrate.upgrade_in_subprocess(f"sqlite:///{missing}")
    assert raised.value.message == (
        "DATABASE_URL: migrations failed: database: OperationalError - is DATABASE_URL reachable?"
    )
    assert "Traceback" not in raised.value.message


def test_serve_skips_the_migration_process_only_at_the_real_head(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert migrate.script_heads() == set(script.get_heads())  # the file parser agrees
    url = f"sqlite:///{tmp_path}/current.db"
    assert not migrate.is_current(url)  # nothing migrated yet
    migrate.upgrade(url, script.get_revision("head").down_revision)  # type: ignore[arg-type, union-attr]
    assert not migrate.is_current(url)  # one revision behind
    migrate.upgrade(url)
    assert migrate.is_current(url)
