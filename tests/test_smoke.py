"""scripts/smoke: the README walk-through (scripts/serve, scripts/paysvc token mint, curl)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="scripts/smoke needs curl")
def test_smoke_walkthrough() -> None:
    result = subprocess.run(  # noqa: S603 - our own script
        ["bash", str(ROOT / "scripts" / "smoke")],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: OK" in result.stdout
