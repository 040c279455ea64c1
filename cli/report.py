"""`paysvc report [--from DATE] [--to DATE] [--currency C] [--json]`: the transaction report per
day, drawn in the terminal (the same figures as `GET /admin/report.svg`)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.common import OPERATOR, JsonOption, run_async, usage_error, with_container
from cli.output import GAP, Col, console, line, money, print_json, table

if TYPE_CHECKING:
    from rich.text import Text

    from paysvc.admin.report import DayFigures, TransactionSummary
    from paysvc.bootstrap import Container

# Net captured, refunded, and volume that was never captured (declined, pending, released).
GLYPHS = {"captured": "█", "refunded": "▓", "not captured": "░"}
STYLES = {"captured": "green", "refunded": "red", "not captured": "grey50"}


def _date(text: str | None, option: str) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        usage_error(option, f"{text!r} is not a date (YYYY-MM-DD)")


def report(
    start: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (default: 30 days ago)")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Last day, YYYY-MM-DD, inclusive (default: today)")
    ] = None,
    currency: Annotated[str | None, typer.Option(help="Only this currency (usd, eur, …)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Volume, captured, refunded and success rate per day, as a chart (UTC days; payments by
    creation day). Audited like GET /admin/transactions."""
    from paysvc.admin.schemas import render_summary
    from paysvc.admin.service import SummaryQuery
    from paysvc.money import normalize_currency

    query = SummaryQuery(
        start=_date(start, "--from"),
        end=_date(end, "--to"),
        currency=None if currency is None else _currency(currency, normalize_currency),
        by_day=True,
    )

    async def work(container: Container) -> TransactionSummary:
        return await container.admin.transactions(OPERATOR, query)

    summary = run_async(with_container(work), options={"from": "--from", "to": "--to"})
    if as_json:
        print_json(render_summary(summary))
        return
    draw(summary)


def _currency(text: str, normalize: Any) -> str:
    try:
        return str(normalize(text))
    except ValueError as error:
        usage_error("--currency", str(error))


def draw(summary: TransactionSummary) -> None:
    from paysvc.admin.chart import days_by_currency, percent

    line(f"payments created {summary.start} to {summary.end} (UTC)")
    panels = days_by_currency(summary)
    if not panels:
        line("no payments in this range")
        return
    legend = ", ".join(f"{GLYPHS[k]} {k}" for k in GLYPHS)
    for code, days in panels.items():
        totals = summary.totals[code]
        line(
            f"{code.upper()}: volume {money(totals.volume, code)}, captured "
            f"{money(totals.captured, code)}, refunded {money(totals.refunded, code)}, "
            f"success rate {percent(totals.success_rate)}"
        )
        rows: list[list[str | Text]] = [
            [
                d.date.isoformat(),
                "",
                money(d.figures.volume, code),
                money(d.figures.captured, code),
                money(d.figures.refunded, code),
                percent(d.figures.success_rate),
            ]
            for d in days
        ]
        columns = (
            Col("day", keep=True),
            Col("chart", keep=True),
            Col("volume", keep=True, justify="right"),
            Col("captured", keep=True, justify="right", priority=2),
            Col("refunded", keep=True, justify="right", priority=1),
            Col("success", keep=True, justify="right"),
        )
        others = sum(
            max(len(columns[i].header), *(len(str(r[i])) for r in rows)) + GAP
            for i in (0, 2, 3, 4, 5)
        )
        width = max(10, min(60, console.width - others))
        peak = max(d.figures.volume for d in days) or 1
        for row, day in zip(rows, days, strict=True):
            row[1] = _bar(day, peak, width)
        console.print(table(columns, rows))
    line(f"{legend}; to scale per currency")


def _bar(day: DayFigures, peak: int, width: int) -> Text:
    from rich.text import Text

    f = day.figures
    cells = round(width * f.volume / peak)
    refunded = round(width * f.refunded / peak)
    captured = max(0, round(width * f.captured / peak) - refunded)
    uncaptured = max(0, cells - captured - refunded)
    bar = Text()
    for key, count in (
        ("captured", captured),
        ("refunded", refunded),
        ("not captured", uncaptured),
    ):
        bar.append(GLYPHS[key] * count, style=STYLES[key])
    bar.append(" " * max(0, width - bar.cell_len))
    return bar
