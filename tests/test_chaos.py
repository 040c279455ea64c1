"""scripts/chaos, a short run: real `paysvc serve` processes (one on SQLite; two on this run's
PostgreSQL server) killed with -9 under a keyed mixed load, restarted, every unanswered request
retried with its key, `paysvc reconcile --apply`, then the money invariants against the
sandbox ledger and `paysvc audit verify`. Long runs: see the README (Test it)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import BACKEND

ROOT = Path(__file__).resolve().parents[1]


def test_chaos_kill_9_under_load_keeps_the_money_invariants() -> None:
    database = "postgresql" if BACKEND == "postgresql" else "sqlite"
    result = subprocess.run(  # noqa: S603 - our own script
        [
            sys.executable,
            str(ROOT / "scripts" / "chaos.py"),
            *("--database", database, "--seed", "11", "--kills", "2", "--duration", "8"),
        ],
        capture_output=True,
        text=True,
        timeout=900,  # a bound on a hang, not a speed target: the script polls for readiness
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = re.search(
        r"(\d+) kills, (\d+) requests \(\d+ attempts, (\d+) cut off by kills\), "
        r"0 violations",
        result.stdout,
    )
    assert summary is not None, output
    kills, requests, lost = map(int, summary.groups())
    assert kills >= 2 and requests > 0, output
    assert lost > 0, f"no request was interrupted by a kill: the run proves nothing\n{output}"
