"""The benchmark scripts run: `scripts/bench --quick` starts paysvc serve, the bare ceiling and a
platform receiver that accepts paysvc's events, drives both servers and prints one JSON object
of the documented shape (numbers are not judged here: speed is measured by the scripts, never
by timed tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BACKEND

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {"create", "get", "flow", "flow_key"}
CELL = {"requests", "errors", "req_per_s", "p50_ms", "p99_ms", "cpu_ms_per_req"}


@pytest.mark.skipif(BACKEND == "postgresql", reason="runs once, in the SQLite pass of the suite")
def test_bench_quick_prints_one_json_report() -> None:
    done = subprocess.run(  # noqa: S603
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["idle_rss_mb"]["bare"] > 0 and report["idle_rss_mb"]["sqlitex1"] > 0
    rows = report["results"]
    assert {(r["scenario"], r["concurrency"]) for r in rows} == {
        (s, c) for s in SCENARIOS for c in report["concurrency"]
    }
    for row in rows:
        assert CELL <= row.keys() and CELL <= row["ceiling"].keys()
        assert set(row["ratio"]) == {"req_per_s", "cpu_ms_per_req", "p50_ms", "p99_ms"}
        assert row["errors"] == 0 and row["requests"] >= 3
        assert row["req_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        # The platform accepted paysvc's events: at least one per payment created in the cell
        # (during it or just after).
        if row["scenario"] != "get":
            assert row["delivered"] + row["drained"] >= row["requests"] > 0
        assert 0 <= row["dispatcher_share"] <= 1
    delivery = report["delivery"]["sqlitex1"]
    assert delivery["deliveries"] > 0 and delivery["cpu_ms_per_delivery"] > 0
    assert "req/s" in done.stderr and "events/s" in done.stderr  # the table


@pytest.mark.skipif(BACKEND == "postgresql", reason="runs once, in the SQLite pass of the suite")
def test_bench_growth_runs_at_a_tiny_size() -> None:
    script = str(ROOT / "scripts" / "bench_growth.py")
    done = subprocess.run(  # noqa: S603
        [sys.executable, script, "--payments", "300", "--backend", "sqlite"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = json.loads(done.stdout)["results"]
    assert result["payments"] == 300
    assert result["audit_verify"]["ok"] and result["audit_verify"]["entries"] >= 300
    assert result["rotation"]["values"] > 300 and result["rotation"]["serving_writes"] > 0
    assert result["startup"]["wall_s"] > 0 and result["startup_empty"]["cpu_s"] > 0
    assert result["analytics"]["year_ms"] > 0
    assert all(page["first_ms"] > 0 for page in result["pages"].values())
