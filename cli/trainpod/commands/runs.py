"""``trainpod runs list|status|logs|cancel``: runs recorded in the local run registry, on any backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from trainpod.runs import RunRegistry
    from trainpod.settings import Settings


def _settings(obj: dict) -> Settings:
    """The settings of ``--profile`` (or TRAINPOD_PROFILE), loaded once per command: the registry and every
    backend the command asks (S3, RunPod) use them."""
    from trainpod.settings import load_settings

    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("profile"))
    return obj["settings"]


def _registry(obj: dict) -> RunRegistry:
    from trainpod.runs import RunRegistry

    return RunRegistry(_settings(obj).state_dir)


def _backend(obj: dict, name: str) -> Any:
    from trainpod.backends import get_backend

    return get_backend(name, _settings(obj))


def _overview(obj: dict, registry: RunRegistry, live: bool) -> list[dict[str, Any]]:
    """One row per run; a backend that cannot answer shows its error as the state instead of failing the list."""
    from trainpod.errors import TrainpodError
    from trainpod.summary import PAID_BACKENDS, human_duration

    rows = []
    for h in registry.all():
        state, billed, duration = "-", None, None
        if live:
            try:
                st = _backend(obj, h.backend).status(h)
                state, billed, duration = st.state, st.billed_usd, st.elapsed_s
            except (TrainpodError, ImportError) as exc:
                state = f"? ({str(exc).splitlines()[0][:60]})"
        estimate = h.extra.get("estimated_cost_usd")
        cost = "-" if billed is None and estimate is None else (
            f"{'-' if billed is None else f'${billed:.2f}'} (est {'-' if estimate is None else f'${estimate:.2f}'})")
        if cost == "-" and h.backend not in PAID_BACKENDS:
            cost = "$0"  # this machine: nothing billed
        rows.append({"run_id": h.run_id, "backend": h.backend, "preset": h.preset, "state": state,
                     "duration": human_duration(duration) if duration is not None else "-", "duration_s": duration,
                     "created": h.created, "output": h.output, "cost": cost, "billed_usd": billed,
                     "estimated_cost_usd": estimate})
    return rows


@click.group()
def runs() -> None:
    """List, inspect, tail and cancel runs launched from this machine."""


@runs.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--no-status", is_flag=True, help="Do not ask each backend for the live state (fast, offline).")
@click.pass_obj
def list_runs(obj: dict, as_json: bool, no_status: bool) -> None:
    """Every recorded run, oldest first, with its live state."""
    from trainpod.console import emit_json, emit_table

    rows = _overview(obj, _registry(obj), live=not no_status)
    if as_json:
        emit_json(rows)
    else:
        columns = ["run_id", "backend", "preset", "state", "duration", "cost", "created", "output"]
        table = [[r[c] if c != "created" else r[c].replace("T", " ")[:16] for c in columns] for r in rows]
        emit_table("runs", columns, table, no_wrap=("run_id", "preset", "state", "duration", "cost", "created"),
                   optional=("created", "output", "preset"))  # the run id starts with the preset and its time


@runs.command()
@click.argument("run_id")
@click.pass_obj
def status(obj: dict, run_id: str) -> None:
    """The live state of RUN_ID (unique prefixes work), as JSON."""
    from trainpod.console import emit_json

    handle = _registry(obj).get(run_id)
    emit_json({"run_id": handle.run_id, "backend": handle.backend,
               **_backend(obj, handle.backend).status(handle).model_dump(mode="json")})


@runs.command()
@click.argument("run_id")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the run ends.")
@click.option("--node", type=click.IntRange(min=0), default=None, metavar="N",
              help="Multi-node runs (RunPod clusters): node N's container log (default: rank 0's training log).")
@click.pass_obj
def logs(obj: dict, run_id: str, follow: bool, node: int | None) -> None:
    """Print the training log of RUN_ID (secrets redacted)."""
    from trainpod.redact import redact_text

    handle = _registry(obj).get(run_id)
    backend = _backend(obj, handle.backend)
    if node is not None and handle.backend != "runpod-cluster":
        raise click.UsageError(f"--node: run {handle.run_id} ran on one node ({handle.backend}); omit --node")
    lines = backend.logs(handle, follow=follow, node=node) if node is not None else backend.logs(handle, follow=follow)
    for line in lines:
        click.echo(redact_text(line))


@runs.command()
@click.argument("run_id")
@click.pass_obj
def cancel(obj: dict, run_id: str) -> None:
    """Stop RUN_ID: SIGTERM, wait for its checkpoint, clean up. Safe to repeat; a finished run is left as it is."""
    from trainpod.launcher import cancel_run

    handle, finished = cancel_run(_registry(obj), run_id, _settings(obj))
    if finished is not None:
        click.echo(f"run {handle.run_id} had already finished ({finished.state}); nothing to cancel")
        return
    click.echo(f"cancelled: {handle.run_id}")


@runs.command()
@click.option("--yes", is_flag=True, help="Terminate the flagged pods (without it, only list them).")
@click.option("--include-unknown", is_flag=True,
              help="Also terminate trainpod pods this machine has no record of (may be a teammate's live run).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def sweep(obj: dict, yes: bool, include_unknown: bool, as_json: bool) -> None:
    """Find RunPod pods and clusters that should not be billing: run done, over its limits, or unknown."""
    from dataclasses import asdict

    from trainpod.backends.runpod import prune_registry_credentials
    from trainpod.backends.runpod import sweep as sweep_pods
    from trainpod.backends.runpod_cluster import sweep as sweep_clusters
    from trainpod.console import emit_json, emit_table

    settings = _settings(obj)
    items = sweep_pods(settings, terminate=yes, include_unknown=include_unknown)
    clusters = sweep_clusters(settings, delete=yes, include_unknown=include_unknown)
    rows = [{**asdict(i), "kind": "pod"} for i in items]
    # a cluster reads as one row (its id and name), deleted as a whole
    rows += [{"pod_id": c.cluster_id, "pod_name": c.cluster_name, "run_id": c.run_id, "verdict": c.verdict,
              "reason": c.reason, "terminated": c.deleted, "kind": "cluster"} for c in clusters]
    credentials = prune_registry_credentials(settings, delete=yes)
    if as_json:
        emit_json(rows)
        return
    for name, what in credentials:
        click.echo(f"registry credential {name}: {what}", err=True)
    columns = ["pod_id", "pod_name", "run_id", "verdict", "reason", "terminated"]
    emit_table("pods and clusters", columns, [[r[c] for c in columns] for r in rows])
    flagged = [r for r in rows if r["verdict"] != "keep" and not r["terminated"]]
    if flagged and not yes:
        click.echo(f"{len(flagged)} pod(s)/cluster(s) flagged; run `trainpod runs sweep --yes` to end them", err=True)


@runs.command()
@click.argument("run_id")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False),
              help="Write the report here (default: RUN's output directory/report.html).")
@click.option("--open", "open_it", is_flag=True, help="Open the report in the web browser.")
@click.pass_obj
def report(obj: dict, run_id: str, output: str | None, open_it: bool) -> None:
    """Write one self-contained HTML report of RUN_ID: loss, learning rate, tokens/s, memory and cost plots,
    config, hardware, image, evaluation, checkpoints. Needs matplotlib (pip install 'trainpod[report]')."""
    import importlib.util

    from trainpod.errors import TrainpodError

    if importlib.util.find_spec("matplotlib") is None:
        raise TrainpodError("`runs report` draws its plots with matplotlib, which is not installed",
                            "pip install 'trainpod[report]'")
    from trainpod.report import write_report

    path = write_report(_registry(obj).get(run_id), _settings(obj), output)
    click.echo(f"report: {path}")
    if open_it:
        import webbrowser

        webbrowser.open(path.as_uri())
