"""The transaction report as a picture: `GET /admin/report.svg` (parsed as XML, and rendered in
headless Chromium when /usr/bin/chromium is there) and `paysvc report` in an 80-column terminal,
on the payments of the transaction-summary tests."""

from __future__ import annotations

import asyncio
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from paysvc.admin.chart import PLOT_HEIGHT
from tests.admin.conftest import SetClock
from tests.admin.test_transactions import RANGE, seed
from tests.cli.test_cli import cli_env
from tests.conftest import ADMIN, CUSTOMER, SERVICE, Api

SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = Path("/usr/bin/chromium")


async def svg(api: Api, query: str = RANGE, headers: dict[str, str] = ADMIN) -> str:
    response = await api.client.get(f"/admin/report.svg?{query}", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "image/svg+xml"
    return await response.text()


def panels(document: str) -> dict[str, Any]:
    root = ET.fromstring(document)  # noqa: S314 - our own output
    return {g.get("data-currency"): g for g in root.iter(f"{SVG}g") if g.get("class") == "panel"}


def day_titles(panel: Any) -> dict[str, str]:
    return {
        g.get("data-date"): g.find(f"{SVG}title").text
        for g in panel.iter(f"{SVG}g")
        if g.get("class") == "day"
    }


def bar_height(panel: Any, date: str, kind: str) -> float:
    day = next(g for g in panel.iter(f"{SVG}g") if g.get("data-date") == date)
    rects = [r for r in day.iter(f"{SVG}rect") if r.get("class") == kind]
    return float(rects[0].get("height")) if rects else 0.0


async def test_report_svg_draws_each_currency_and_day(api: Api, clock: SetClock) -> None:
    await seed(api, clock)
    document = await svg(api)
    assert "<script" not in document and "href" not in document  # no script, no external asset
    by_currency = panels(document)
    assert list(by_currency) == ["eur", "usd"]
    usd = by_currency["usd"]
    titles = day_titles(usd)
    assert list(titles) == ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
    assert titles["2026-11-20"] == (
        "2026-11-20: volume 70.00 USD, captured 30.00 USD, refunded 5.00 USD, success rate 66.7%"
    )
    assert titles["2026-11-21"].endswith("captured 0.00 USD, refunded 0.00 USD, success rate 50.0%")
    assert titles["2026-11-22"].endswith("success rate n/a")
    # Bars are to scale: the busiest day is the full height.
    assert bar_height(usd, "2026-11-20", "volume") == PLOT_HEIGHT
    assert bar_height(usd, "2026-11-20", "captured") == pytest.approx(
        PLOT_HEIGHT * 3000 / 7000, 0.01
    )
    assert bar_height(usd, "2026-11-21", "volume") == pytest.approx(PLOT_HEIGHT * 2900 / 7000, 0.01)
    assert bar_height(usd, "2026-11-22", "volume") == 0
    rate = next(p for p in usd.iter(f"{SVG}polyline") if p.get("class") == "rate")
    assert len(rate.get("points", "").split()) == 2  # only the days with a confirmed payment
    assert "100.00 USD" not in document and "70.00 USD" in document  # the axis peak

    only_eur = panels(await svg(api, f"{RANGE}&currency=eur"))
    assert list(only_eur) == ["eur"]


async def test_report_svg_is_for_admins_only(api: Api) -> None:
    for headers, status in ((CUSTOMER, 403), (SERVICE, 403), ({}, 401)):
        response = await api.client.get(f"/admin/report.svg?{RANGE}", headers=headers)
        assert response.status == status
        assert (await response.json())["error"]["type"] in (
            "permission_error",
            "authentication_error",
        )
    bad = await api.client.get("/admin/report.svg?from=2026-11-23&to=2026-11-20", headers=ADMIN)
    assert bad.status == 422


async def test_an_empty_range_says_so(api: Api) -> None:
    document = await svg(api, "from=2020-01-01&to=2020-01-02")
    assert panels(document) == {}
    assert "No payments in this range." in document


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
async def test_report_svg_renders_in_chromium(api: Api, clock: SetClock) -> None:
    from playwright.async_api import async_playwright

    await seed(api, clock)
    document = await svg(api)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = await browser.new_page()
            await page.set_content(document)
            drawn = await page.evaluate(
                """() => [...document.querySelectorAll('rect.volume, rect.captured')]
                    .map(r => r.getBoundingClientRect())
                    .filter(b => b.width > 0 && b.height > 0).length"""
            )
            size = await page.evaluate(
                "() => { const b = document.querySelector('svg').getBoundingClientRect();"
                " return [b.width, b.height]; }"
            )
            png = await page.locator("svg").screenshot()
        finally:
            await browser.close()
    # usd: 2 days with volume, 1 with captures; eur: 2 and 1.
    assert drawn == 6
    assert size[0] == 860 and size[1] > 400
    assert png.startswith(b"\x89PNG") and len(png) > 5000


async def test_paysvc_report_at_80_columns_and_as_json(
    api: Api, clock: SetClock, database_url: str
) -> None:
    await seed(api, clock)
    args = ["report", "--from", "2026-11-20", "--to", "2026-11-23"]
    env = {**cli_env(database_url), "COLUMNS": "80"}
    result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    table_lines = [line for line in lines if line[:1] in ("2", "d", "─")]  # days, header, rule
    assert len(table_lines) == 2 * (4 + 2)
    assert all(len(line) <= 80 for line in table_lines), result.stdout
    assert (
        "USD: volume 99.00 USD, captured 30.00 USD, refunded 5.00 USD, success rate 60.0%" in lines
    )
    day = next(line for line in lines if line.startswith("2026-11-20") and "70.00 USD" in line)
    assert "30.00 USD" in day and "5.00 USD" in day and "66.7%" in day and "█" in day
    as_json = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--json"], env=env)
    over_http = await api.get(f"/admin/transactions?{RANGE}&group_by=day", ADMIN)
    assert json.loads(as_json.stdout) == over_http
