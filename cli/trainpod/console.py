"""Output helpers for the CLI. rich is imported only when a table is actually printed."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def emit_table(title: str, columns: list[str], rows: list[list[Any]], no_wrap: tuple[str, ...] = (),
               optional: tuple[str, ...] = ()) -> None:
    """A rich table on a terminal, tab-separated otherwise (every column).

    Columns in ``no_wrap`` never break mid-word; when they do not fit the terminal, the ``optional`` columns
    are left out (in that order) and a note says which (``--json`` shows everything)."""
    if not sys.stdout.isatty():
        # plain, tab-separated: greppable and cut-able, no terminal styling in pipes
        click.echo("\t".join(columns))
        for r in rows:
            click.echo("\t".join("" if v is None else str(v) for v in r))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    cells = [["" if v is None else str(v) for v in r] for r in rows]

    def needed(cols: list[str]) -> int:  # rich's default box: "│ " + cell + " " per column, one closing "│"
        widths = [max([len(c)] + [len(r[columns.index(c)]) for r in cells]) if c in no_wrap
                  else min(20, max([len(c)] + [len(r[columns.index(c)]) for r in cells])) for c in cols]
        return sum(widths) + 3 * len(cols) + 1

    shown, hidden = list(columns), []
    for c in optional:
        if needed(shown) <= console.width:
            break
        shown.remove(c)
        hidden.append(c)
    table = Table(title=title, show_lines=False)
    for c in shown:
        table.add_column(c, overflow="fold", no_wrap=c in no_wrap)
    for r in cells:
        table.add_row(*(r[columns.index(c)] for c in shown))
    console.print(table)
    if hidden:
        console.print(f"({', '.join(hidden)} left out at this width; --json shows every column)", style="dim")


def emit_yamlish(data: Any, indent: int = 0) -> None:
    """A readable nested view (YAML-like, without a YAML dependency)."""
    pad = "  " * indent
    if isinstance(data, dict):
        for k, v in data.items():
            if isinstance(v, (dict, list)) and v:
                click.echo(f"{pad}{k}:")
                emit_yamlish(v, indent + 1)
            else:
                click.echo(f"{pad}{k}: {_scalar(v)}")
    elif isinstance(data, list):
        for v in data:
            if isinstance(v, (dict, list)):
                click.echo(f"{pad}-")
                emit_yamlish(v, indent + 1)
            else:
                click.echo(f"{pad}- {_scalar(v)}")
    else:
        click.echo(f"{pad}{_scalar(data)}")


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str) and ("\n" in v or v == ""):
        return json.dumps(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)
