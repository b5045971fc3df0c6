"""Output helpers for the CLI. rich is imported only when a table is actually printed."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def emit_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    if not sys.stdout.isatty():
        # plain, tab-separated: greppable and cut-able, no terminal styling in pipes
        click.echo("\t".join(columns))
        for r in rows:
            click.echo("\t".join("" if v is None else str(v) for v in r))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r))
    Console().print(table)


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
