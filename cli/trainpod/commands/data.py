"""``trainpod data push | pull | ls``: move datasets between a directory and S3 (or another directory).

Thin by design: each command parses, calls one function of :mod:`trainpod.storage`, prints. boto3
is imported only when a command runs.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def _settings(obj: dict | None) -> Any:
    from trainpod.settings import load_settings

    return load_settings((obj or {}).get("profile"))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _report(result: Any, as_json: bool, verb: str) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    would = "would " if result.dry_run else ""
    for path, size in result.transferred if result.dry_run else []:
        click.echo(f"{verb}\t{size}\t{path}")
    for path in result.deleted if result.dry_run else []:
        click.echo(f"delete\t\t{path}")
    click.echo(
        f"{result.source} -> {result.dest}: {would}{verb} {len(result.transferred)} files "
        f"({_human(result.bytes)}), {would}delete {len(result.deleted)}, {result.unchanged} unchanged "
        f"in {result.seconds:.2f}s",
        err=not result.dry_run,
    )
    if result.manifest_sha256:
        click.echo(f"manifest sha256: {result.manifest_sha256}", err=not result.dry_run)
    if result.verified_by != "sha256":
        click.echo("warning: no manifest at the source; files were checked by size only", err=True)


_common = [
    click.option("--dry-run", is_flag=True, help="List what would move; change nothing."),
    click.option("--delete", is_flag=True, help="Remove files at the destination that the source lacks."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable result."),
    click.option("--workers", type=click.IntRange(1, 512), default=None, help="Parallel transfers (default 64)."),
]


def _with_common(fn: Any) -> Any:
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@click.group()
def data() -> None:
    """Push, pull and list datasets in S3 (s3://BUCKET/PREFIX) or a local directory.

    \b
    trainpod data push ./data/alpaca s3://my-bucket/datasets/alpaca
    trainpod data pull s3://my-bucket/datasets/alpaca ./data/alpaca
    trainpod data ls s3://my-bucket/datasets/alpaca

    Files are compared by size + sha256 against the manifest kept at PREFIX/.trainpod/manifest.json,
    so a fresh checkout re-uploads nothing. Endpoint and credentials come from TRAINPOD_S3_ENDPOINT_URL /
    AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the standard AWS chain.
    """


@data.command()
@click.argument("local_dir", type=click.Path(file_okay=False))
@click.argument("uri")
@_with_common
@click.option("--verify", is_flag=True,
              help="Also list the destination and re-upload objects removed or changed behind trainpod's back.")
@click.pass_obj
def push(obj: dict, local_dir: str, uri: str, dry_run: bool, delete: bool, as_json: bool,
         workers: int | None, verify: bool) -> None:
    """Upload LOCAL_DIR to URI: only files whose size or sha256 differ; the manifest last."""
    from trainpod.storage import DEFAULT_WORKERS, sync_up

    result = sync_up(local_dir, uri, _settings(obj), delete=delete, dry_run=dry_run, verify=verify,
                     progress=not as_json and sys.stderr.isatty(), workers=workers or DEFAULT_WORKERS)
    _report(result, as_json, "upload")


@data.command()
@click.argument("uri")
@click.argument("local_dir", type=click.Path(file_okay=False))
@_with_common
@click.pass_obj
def pull(obj: dict, uri: str, local_dir: str, dry_run: bool, delete: bool, as_json: bool,
         workers: int | None) -> None:
    """Download URI into LOCAL_DIR, verifying every file's size and sha256 (temp names, then rename)."""
    from trainpod.storage import DEFAULT_WORKERS, sync_down

    result = sync_down(uri, local_dir, _settings(obj), delete=delete, dry_run=dry_run,
                       progress=not as_json and sys.stderr.isatty(), workers=workers or DEFAULT_WORKERS)
    _report(result, as_json, "download")


@data.command("ls")
@click.argument("uri")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable listing.")
@click.pass_obj
def ls(obj: dict, uri: str, as_json: bool) -> None:
    """List the files under URI with sizes (and sha256 when a manifest describes them)."""
    from trainpod.storage import list_uri

    listing = list_uri(uri, _settings(obj))
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    for f in listing["files"]:
        click.echo(f"{f['size']:>12}  {(f['sha256'] or '-')[:12]:<12}  {f['path']}")
    digest = listing["manifest_sha256"] or "(no manifest: push with trainpod to pin it)"
    click.echo(f"{len(listing['files'])} files, {_human(listing['total_bytes'])}; manifest sha256: {digest}")
