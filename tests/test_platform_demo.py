"""scripts/platform-demo: paysvc serve with an order service and a notification sink."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_platform_demo() -> None:
    result = subprocess.run(  # noqa: S603 - our own script
        ["bash", str(ROOT / "scripts" / "platform-demo")],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "order 1042 cancelled: payment refunded, 1999 of 1999 refunded" in out
    assert "order service received 8:" in out and "notification service received 3:" in out
    assert "order-status service received 1:" in out
    assert out.count("[signature ok]") == 12 and "SIGNATURE BAD" not in out
    assert "@" not in out  # no email address in the output
