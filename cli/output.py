"""What every command prints: money, ids, times, tables that fit the terminal, JSON, errors.

Cheap to import (rich and the standard library only): `paysvc --help` imports every command
module, so nothing here may pull in SQLAlchemy, aiohttp, alembic or stripe.

- `money(1999, "usd")` → `19.99 USD`; `when(created_at)` → `2026-12-03 12:46` (seconds only on a
  terminal wider than 100 columns);
- `table(columns, rows)`: columns marked `keep` (ids, money, statuses, times) are never wrapped
  or cut; `wrap` columns fold onto more lines; when the terminal is too narrow, optional columns
  (lowest `priority` first) are left out and named in a caption (`--json` has everything);
- `print_json(value)` on stdout; `render_error(...)` one line on stderr, or `{"error": {...}}`
  when the command runs with `--json`.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

WIDE = 100  # from this many columns on, times keep their seconds


def money(minor: int, currency: str) -> str:
    """`19.99 USD`, `500 JPY` (the currency's minor unit, never a float)."""
    from paysvc.money import Money

    return Money(minor, currency).display()


def when(value: str | dt.datetime | None) -> str:
    """A UTC time for a table: `2026-12-03 12:46:07`, or without seconds on a narrow terminal."""
    if value is None:
        return ""
    moment = (
        dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    )
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if console.width >= WIDE else "%Y-%m-%d %H:%M")


@dataclass(frozen=True, slots=True)
class Col:
    """One table column. `keep`: shown whole or not at all (ids, amounts, statuses, times);
    otherwise the text wraps (at least `min_width` wide). `priority`: columns with a lower one
    are left out first when the terminal is too narrow; `None` = always shown."""

    header: str
    keep: bool = False
    justify: Literal["left", "right"] = "left"
    priority: int | None = None
    min_width: int = 10


GAP = 2  # between two columns (padding 1 on each side, no vertical rules)


def table(
    columns: Sequence[Col], rows: Iterable[Sequence[str | Text]], width: int | None = None
) -> Table:
    """A borderless table that fits `width` (default: the terminal's) without cutting a kept
    cell. Cells are plain text (never markup: `[x]` in a reason stays `[x]`) or rich `Text`."""
    cells = [[Text(c) if isinstance(c, str) else c for c in row] for row in rows]
    width = console.width if width is None else width

    def needed(index: int) -> int:
        column = columns[index]
        widest = max(
            (cell_len(part) for row in cells for part in row[index].plain.splitlines()),
            default=0,
        )
        widest = max(widest, len(column.header))
        return widest if column.keep else min(widest, max(column.min_width, len(column.header)))

    shown = [i for i, c in enumerate(columns) if c.priority is None]
    optional = sorted(
        (i for i, c in enumerate(columns) if c.priority is not None),
        key=lambda i: -(columns[i].priority or 0),
    )
    used = sum(needed(i) for i in shown) + GAP * (len(shown) - 1)
    for index in optional:
        if used + GAP + needed(index) <= width:
            shown.append(index)
            used += GAP + needed(index)
    shown.sort()
    hidden = [columns[i].header for i in range(len(columns)) if i not in shown]
    result = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        caption=(f"not shown at {width} columns: {', '.join(hidden)} (widen or use --json)")
        if hidden and cells
        else None,
        caption_justify="left",
    )
    for i in shown:
        column = columns[i]
        result.add_column(
            column.header,
            justify=column.justify,
            no_wrap=column.keep,
            min_width=needed(i),
            overflow="fold",
        )
    for row in cells:
        result.add_row(*(row[i] for i in shown))
    return result


def fields(pairs: Iterable[tuple[str, str]]) -> Table:
    """A two-column `field value` table (one object): values wrap, field names never do."""
    result = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    result.add_column("field", no_wrap=True, style="bold")
    result.add_column("value", overflow="fold")
    for name, value in pairs:
        result.add_row(Text(name), Text(value))
    return result


def object_fields(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """An API object (payment, refund, …) as `field value` pairs for `fields()`: amounts as
    `19.99 USD`, times as `when()`, nested objects as compact JSON, null as nothing."""
    pairs = []
    for key, value in obj.items():
        is_amount = key == "amount" or key.startswith("amount_")
        if is_amount and isinstance(value, int) and isinstance(obj.get("currency"), str):
            text = money(value, obj["currency"])
        elif key.endswith("_at") and isinstance(value, str):
            text = when(value)
        elif isinstance(value, dict | list):
            text = json.dumps(value, separators=(",", ":")) if value else ""
        else:
            text = "" if value is None else str(value)
        pairs.append((key, text))
    return pairs


def line(text: str) -> None:
    """One line on stdout that is never wrapped, even into a pipe (summaries, results)."""
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def render_error(
    message: str, *, type_: str = "cli_error", code: str = "error", as_json: bool = False
) -> None:
    """One line on stderr, `error: …`; with `--json` the contract's error object instead."""
    if as_json:
        error = {"type": type_, "code": code, "message": message}
        sys.stderr.write(json.dumps({"error": error}) + "\n")
    else:
        err_console.print(f"[red]error:[/red] {_escape(message)}", soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
