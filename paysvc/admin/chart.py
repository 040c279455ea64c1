"""The transaction report as a picture: per currency and day, volume, captured and refunded as
bars and the success rate as a line. Plain SVG (no script, no external asset, no font file):
served at `GET /admin/report.svg`; `paysvc report` draws the same figures in the terminal."""

from __future__ import annotations

from decimal import Decimal
from xml.sax.saxutils import escape

from paysvc.admin.report import DayFigures, TransactionSummary
from paysvc.money import Money

WIDTH = 860
PANEL_HEIGHT = 240
TOP = 56
LEFT, RIGHT = 92, 56  # room for the amount axis (left) and the rate axis (right)
PLOT_HEIGHT = 160
COLORS = {"volume": "#c8ccd4", "captured": "#2e7d32", "refunded": "#c62828", "rate": "#1565c0"}
FONT = "font-family='sans-serif' font-size='12'"
TITLE_FONT = "font-family='sans-serif' font-size='16' font-weight='bold'"


def days_by_currency(summary: TransactionSummary) -> dict[str, list[DayFigures]]:
    """`summary.by_day` split per currency, days in order (every day of the range present)."""
    panels: dict[str, list[DayFigures]] = {code: [] for code in summary.totals}
    for day in summary.by_day or []:
        panels.setdefault(day.currency, []).append(day)
    return panels


def render_svg(summary: TransactionSummary) -> str:
    """One panel per currency; a short note when there were no payments in the range."""
    panels = days_by_currency(summary)
    height = TOP + max(1, len(panels)) * PANEL_HEIGHT
    title = f"Payments created {summary.start.isoformat()} to {summary.end.isoformat()} (UTC)"
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}' role='img' aria-label='{escape(title)}'>",
        f"<title>{escape(title)}</title>",
        f"<rect width='{WIDTH}' height='{height}' fill='#ffffff'/>",
        f"<text x='{LEFT}' y='24' {TITLE_FONT}>{escape(title)}</text>",
        _legend(),
    ]
    if not panels:
        parts.append(f"<text x='{LEFT}' y='{TOP + 40}' {FONT}>No payments in this range.</text>")
    for index, (currency, days) in enumerate(panels.items()):
        parts.append(_panel(currency, days, TOP + index * PANEL_HEIGHT))
    parts.append("</svg>")
    return "\n".join(parts)


def _legend() -> str:
    items = [
        ("volume", "volume"),
        ("captured", "captured"),
        ("refunded", "refunded"),
        ("rate", "success rate"),
    ]
    out = []
    x = LEFT
    for key, label in items:
        out.append(
            f"<rect x='{x}' y='34' width='12' height='12' fill='{COLORS[key]}'/>"
            f"<text x='{x + 16}' y='45' {FONT}>{label}</text>"
        )
        x += 24 + 8 * len(label)
    return "".join(out)


def _panel(currency: str, days: list[DayFigures], top: int) -> str:
    plot_width = WIDTH - LEFT - RIGHT
    base = top + 24 + PLOT_HEIGHT
    peak = max((d.figures.volume for d in days), default=0) or 1
    slot = plot_width / max(1, len(days))
    bar = max(1.0, slot * 0.7)

    def y(amount: int) -> float:
        return base - PLOT_HEIGHT * amount / peak

    out = [
        f"<g class='panel' data-currency='{escape(currency)}'>",
        f"<text x='{LEFT}' y='{top + 14}' {FONT} font-weight='bold'>{currency.upper()}</text>",
        f"<line x1='{LEFT}' y1='{base}' x2='{LEFT + plot_width}' y2='{base}' stroke='#555'/>",
        f"<text x='{LEFT - 6}' y='{y(peak) + 4:.1f}' {FONT} text-anchor='end'>"
        f"{escape(Money(peak, currency).display())}</text>",
        f"<text x='{LEFT - 6}' y='{base + 4}' {FONT} text-anchor='end'>0</text>",
        f"<text x='{LEFT + plot_width + 6}' y='{base - PLOT_HEIGHT + 4}' {FONT}>100%</text>",
        f"<text x='{LEFT + plot_width + 6}' y='{base + 4}' {FONT}>0%</text>",
    ]
    rate_points = []
    for index, day in enumerate(days):
        f = day.figures
        x = LEFT + index * slot + (slot - bar) / 2
        label = (
            f"{day.date.isoformat()}: volume {Money(f.volume, currency).display()}, "
            f"captured {Money(f.captured, currency).display()}, "
            f"refunded {Money(f.refunded, currency).display()}, "
            f"success rate {percent(f.success_rate)}"
        )
        out.append(
            f"<g class='day' data-date='{day.date.isoformat()}'><title>{escape(label)}</title>"
        )
        for key, amount, offset, width in (
            ("volume", f.volume, 0.0, bar),
            ("captured", f.captured, bar * 0.2, bar * 0.6),
            ("refunded", f.refunded, bar * 0.35, bar * 0.3),
        ):
            if amount:
                out.append(
                    f"<rect class='{key}' x='{x + offset:.1f}' y='{y(amount):.1f}' "
                    f"width='{width:.1f}' height='{base - y(amount):.1f}' fill='{COLORS[key]}'/>"
                )
        out.append("</g>")
        if f.success_rate is not None:
            cy = base - PLOT_HEIGHT * float(Decimal(f.success_rate))
            rate_points.append(f"{x + bar / 2:.1f},{cy:.1f}")
    if rate_points:
        out.append(
            f"<polyline class='rate' points='{' '.join(rate_points)}' fill='none' "
            f"stroke='{COLORS['rate']}' stroke-width='2'/>"
        )
    if days:
        for day, anchor, x in (
            (days[0], "start", LEFT),
            (days[-1], "end", LEFT + plot_width),
        ):
            out.append(
                f"<text x='{x}' y='{base + 18}' {FONT} text-anchor='{anchor}'>"
                f"{day.date.isoformat()}</text>"
            )
    out.append("</g>")
    return "\n".join(out)


def percent(rate: str | None) -> str:
    """`"0.9500"` → `95.0%`; `n/a` when nothing was confirmed."""
    return "n/a" if rate is None else f"{Decimal(rate) * 100:.1f}%"
