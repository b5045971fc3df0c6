"""``trainpod build`` and ``trainpod push``: the per-hardware training image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

_TARGET_HELP = "PRESET or hardware NAME (default: the 'cpu' hardware profile)."


def _options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options ``build`` and ``push`` share (one plan, so one set of inputs)."""
    fn = click.option("--hardware", help="Hardware profile to build for (instead of a preset).")(fn)
    fn = click.option("--base-image", help="Override the base image (e.g. python:3.11-slim).")(fn)
    fn = click.option("--ca-bundle", type=click.Path(dir_okay=False),
                      help="Extra CA bundle for pip inside the build (default: $PIP_CERT / $REQUESTS_CA_BUNDLE).")(fn)
    fn = click.option("--wheelhouse", type=click.Path(file_okay=False),
                      help="Local wheel directory for torch (default: $PIP_FIND_LINKS).")(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)
    return click.argument("target", required=False)(fn)


def _run(obj: dict, target: str | None, *, push: bool, build: bool, dry_run: bool, as_json: bool,
         prune: bool = False, **kw: str | None) -> None:
    from trainpod.console import emit_json, emit_yamlish
    from trainpod.images import build_and_push
    from trainpod.settings import load_settings

    settings = load_settings(obj.get("profile"))
    verbose = obj.get("verbose", 0) > 0
    if dry_run:
        result = build_and_push(target, settings=settings, config=obj.get("config"), dry_run=True, **kw)
    else:
        from rich.console import Console

        console = Console(stderr=True)
        with console.status("preparing the build context") as status:
            def on_line(line: str) -> None:
                if line.startswith("Step ") or verbose:
                    status.update(line[:120])
                if verbose:
                    console.print(line, markup=False, highlight=False)

            result = build_and_push(target, settings=settings, config=obj.get("config"), do_build=build,
                                    do_push=push, do_prune=prune, on_line=on_line, **kw)
    if as_json:
        emit_json(result)
        return
    plan = result["plan"]
    if dry_run:
        emit_yamlish(plan)
        return
    tag = plan["tag"]
    if "built" in result:
        click.echo(f"{'built' if result['built'] else 'up to date'}: {tag}")
    if "pushed" in result:
        click.echo(f"{'pushed' if result['pushed'] else 'already in registry'}: {tag}")
    pruned = result.get("pruned")
    if pruned is not None:
        for old in pruned["removed"]:
            click.echo(f"removed: {old}")
        for old in pruned["kept"]:
            click.echo(f"kept: {old}")
        if not pruned["removed"] and not pruned["kept"]:
            click.echo("nothing to prune")


@click.command()
@_options
@click.option("--push", "do_push", is_flag=True, help="Push to TRAINPOD_REGISTRY after building.")
@click.option("--prune", "do_prune", is_flag=True,
              help="Then remove this profile's older trainpod images from the local engine (never registry tags).")
@click.option("--dry-run", is_flag=True, help="Print Dockerfile, build args, context files and tag; touch no engine.")
@click.pass_obj
def build(obj: dict, target: str | None, do_push: bool, do_prune: bool, dry_run: bool, as_json: bool,
          **kw: str | None) -> None:
    """Build the training image for a preset's hardware (or --hardware NAME).

    The tag is content-addressed: building an unchanged tree does nothing.
    """
    _run(obj, target, build=True, push=do_push, dry_run=dry_run, as_json=as_json, prune=do_prune, **kw)


@click.command()
@_options
@click.pass_obj
def push(obj: dict, target: str | None, as_json: bool, **kw: str | None) -> None:
    """Push the built image to TRAINPOD_REGISTRY (skipped when the registry already has the tag)."""
    _run(obj, target, build=False, push=True, dry_run=False, as_json=as_json, **kw)
