"""deploy/: the Prometheus alert rules and the Grafana dashboard use only metrics that exist,
in valid PromQL (`promtool check rules`, `promtool test rules` when promtool is installed)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "paysvc-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "paysvc-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "paysvc-dashboard.json"
# Gauges registered by other modules on the default registry: the operations ledger, the
# outbox and the audit sealer.
ELSEWHERE = {
    "paysvc_operations_pending",
    "paysvc_operations_unknown",
    "paysvc_operations_oldest_pending_age_seconds",
    "paysvc_events_pending",
    "paysvc_events_dead",
    "paysvc_audit_head_sequence",
}
ALERTS = {
    "PaysvcHighDeclineRate",
    "PaysvcGatewayErrors",
    "PaysvcGatewayCircuitOpen",
    "PaysvcOperationsUnknown",
    "PaysvcOperationsPendingTooLong",
    "PaysvcReconcileDrift",
    "PaysvcEventsDead",
    "PaysvcAuditHeadNotAdvancing",
}


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels and all(p["targets"] for p in panels)
    return [target["expr"] for panel in panels for target in panel["targets"]]


async def _exposed(api: Api, client: TestClient[Any, Any]) -> set[str]:
    await api.paid()
    text = await (await client.get("/metrics")).text()
    suffixes = ("", "_total", "_bucket", "_count", "_sum")  # a family may have no sample yet
    return {f.name + end for f in text_string_to_metric_families(text) for end in suffixes}


async def test_rules_and_dashboard_name_only_real_metrics(
    api: Api, client: TestClient[Any, Any]
) -> None:
    exposed = await _exposed(api, client)
    for source, text in (("alerts", RULES.read_text()), ("dashboard", "\n".join(_expressions()))):
        names = set(re.findall(r"\b(?:paysvc|process)_[a-z_]*[a-z]\b", text))
        assert names, source
        unknown = names - ELSEWHERE - exposed
        assert unknown == set(), (source, unknown)
    assert set(re.findall(r"alert: (\w+)", RULES.read_text())) >= ALERTS


async def _promtool(*args: str) -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (apt-get install prometheus): rules not checked")
    process = await asyncio.create_subprocess_exec(
        promtool, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    assert "SUCCESS" in await _promtool("check", "rules", str(RULES))
    assert "SUCCESS" in await _promtool("test", "rules", str(RULE_TESTS))


async def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables filled in, as a recording rule."""
    rules = [
        {"record": f"paysvc:dashboard:{i}", "expr": expr}
        for i, expr in enumerate(
            e.replace("$__rate_interval", "5m").replace("$job", ".*") for e in _expressions()
        )
    ]
    checked = tmp_path / "dashboard-rules.json"  # JSON is YAML
    checked.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert f"SUCCESS: {len(rules)} rules found" in await _promtool("check", "rules", str(checked))
