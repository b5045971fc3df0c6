"""``trainpod list | show | validate | completion``: read-only views of the configuration."""

from __future__ import annotations

import click

KINDS = ("presets", "experts", "hardware", "datasets", "lora", "hyperparameters", "jobs", "pipelines")


def _complete_preset(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    try:
        from trainpod.config import load_catalog

        root = ctx.find_root().params
        cat = load_catalog(root.get("config"))
        return [p for p in [*cat.presets, *cat.jobs] if p.startswith(incomplete)]
    except Exception:  # completion must never crash the shell
        return []


@click.command("list")
@click.argument("kind", type=click.Choice(KINDS), default="presets")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def list_cmd(obj: dict, kind: str, as_json: bool) -> None:
    """List the entries of one table of training.toml (packaged defaults + your overlay)."""
    from trainpod.catalog_views import list_rows
    from trainpod.console import emit_json, emit_table

    columns, rows = list_rows(kind, obj.get("config"))
    if as_json:
        emit_json([dict(zip(columns, r, strict=True)) for r in rows])
    else:
        emit_table(kind, columns, rows)


@click.command()
@click.argument("preset", shell_complete=_complete_preset)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a training key (repeatable).")
@click.pass_obj
def show(obj: dict, preset: str, as_json: bool, sets: tuple[str, ...]) -> None:
    """Show PRESET fully resolved: training config, settings (secrets as ***), derived figures."""
    from trainpod.catalog_views import show_preset
    from trainpod.console import emit_json, emit_yamlish

    view = show_preset(preset, config=obj.get("config"), profile=obj.get("profile"), sets=sets)
    if as_json:
        emit_json(view)
    else:
        emit_yamlish(view)


@click.command()
@click.argument("presets", nargs=-1, shell_complete=_complete_preset)
@click.option("--all", "all_", is_flag=True, help="Validate every preset.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a training key (repeatable).")
@click.option("--remote", type=click.Choice(["local", "docker", "runpod"]), default=None,
              help="Check for this backend (default: each preset's `remote`).")
@click.pass_obj
def validate(obj: dict, presets: tuple[str, ...], all_: bool, sets: tuple[str, ...], remote: str | None) -> None:
    """Validate presets: schema, references, hardware cross-checks, and whether the backend can start them
    from this machine (hardware, installed packages). Exit 2 on the first problem set."""
    from trainpod.catalog_views import validate_presets

    results = validate_presets(presets, all_=all_, config=obj.get("config"), profile=obj.get("profile"),
                               sets=sets, remote=remote)
    failed = 0
    for name, problem in results:
        if problem is None:
            click.echo(f"ok       {name}")
        else:
            failed += 1
            click.echo(f"invalid  {name}: {problem}", err=True)
    if failed:
        raise SystemExit(2)


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script: eval "$(trainpod completion bash)"."""
    from click.shell_completion import get_completion_class

    from trainpod.commands import cli

    comp_cls = get_completion_class(shell)
    click.echo(comp_cls(cli, {}, "trainpod", "_TRAINPOD_COMPLETE").source())
