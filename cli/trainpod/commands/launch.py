"""``trainpod launch PRESET --remote local|docker|runpod [--dry-run]``."""

from __future__ import annotations

import sys
import time

import click

from trainpod.commands.catalog import _complete_preset


@click.command()
@click.argument("preset", shell_complete=_complete_preset)
@click.option("--remote", type=click.Choice(["local", "docker", "runpod"]), default=None,
              help="Where to run (default: the preset's `remote`).")
@click.option("--dry-run", is_flag=True, help="Print the plan summary (what, where, cost, guards, warnings) and stop.")
@click.option("--detach", is_flag=True, help="Return once the run is submitted; follow with `trainpod runs logs -f`.")
@click.option("--resume", is_flag=False, flag_value="latest", default=None, metavar="[RUN_ID]",
              help="Continue a run from its latest complete checkpoint (default: the newest run of PRESET).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a training key, e.g. --set learning_rate=3e-4 --set lora.r=8.")
@click.option("--max-runtime", "max_runtime", type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Stop (checkpoint, then terminate) after this many minutes.")
@click.option("--max-cost", "max_cost", type=click.FloatRange(min=0, min_open=True), metavar="USD",
              help="Stop before the run would cost more than this (remote GPU backends).")
@click.option("--spot/--on-demand", default=None, help="RunPod: interruptible pods, relaunched on preemption.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Local output root (default ./runs).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the whole plan as JSON (the RunSpec once; format in the README) and stop.")
@click.option("--show-request", is_flag=True, help="Print the exact provider request (secrets as ***) and stop.")
@click.option("-y", "--yes", is_flag=True, envvar="TRAINPOD_YES",
              help="Launch on a paid backend without asking (also TRAINPOD_YES=1).")
@click.option("--allow-long-lived-credentials", "long_lived", is_flag=True,
              help="RunPod: send the pod your own AWS keys when the S3 endpoint has no STS (default: refuse).")
@click.pass_obj
def launch(obj: dict, preset: str, remote: str | None, dry_run: bool, detach: bool, resume: str | None,
           sets: tuple[str, ...], max_runtime: float | None, max_cost: float | None, spot: bool | None,
           output_dir: str | None, as_json: bool, show_request: bool, yes: bool, long_lived: bool) -> None:
    """Launch PRESET (or a [jobs.NAME] custom job). Without --dry-run, follows the run's log and exits with
    the trainer's exit code."""
    from trainpod import launcher, progress, summary
    from trainpod.console import emit_json

    req = launcher.LaunchRequest(
        preset=preset, remote=remote, dry_run=dry_run, detach=detach, resume=resume, sets=sets,
        config=obj.get("config"), profile=obj.get("profile"), max_runtime_minutes=max_runtime,
        max_cost_usd=max_cost, spot=spot, output_dir=output_dir, allow_long_lived_credentials=long_lived,
    )
    prep = launcher.prepare(req)
    plan_summary = summary.build(prep.plan, summary.gather_facts(prep.plan, prep.settings))
    if as_json:
        emit_json(summary.machine_plan(prep.plan, plan_summary))
        return
    if show_request:
        emit_json(summary.provider_request(prep.plan))
        line = getattr(prep.backend, "command_line", None)
        if line is not None:
            click.echo("\n# equivalent command:\n" + line(prep.plan))
        return
    if dry_run:
        summary.print_summary(plan_summary)
        return
    if (finished := launcher.finished_already(prep, req)) is not None:
        done, _status = finished
        click.echo(f"run {done.run_id} already finished (succeeded): nothing to resume, nothing changed; "
                   f"outputs in {done.output}", err=True)
        click.echo(f"to train again, start a new run: trainpod launch {preset}", err=True)
        return
    launcher.preflight(prep)  # seconds (API key, S3 access): one clear error line before the plan and the question
    summary.print_summary(plan_summary, err=True)
    summary.confirm_spend(plan_summary, yes=yes)
    prep, handle = launcher.submit(prep, on_line=lambda line: click.echo(f"[image] {line}", err=True),
                                   preflighted=True)
    click.echo(f"run {handle.run_id} submitted ({handle.backend}); output: {handle.output}", err=True)
    if detach:
        click.echo(f"follow with: trainpod runs logs -f {handle.run_id}", err=True)
        return
    follower = launcher.follow(prep.backend, handle, prep.settings)  # relaunches a preempted spot run
    tracker = progress.Tracker()
    started, interrupted = time.monotonic(), False
    try:
        with progress.LiveView(tracker, paid=plan_summary.paid) as view, \
                progress.StatusPoller(prep.backend, follower, tracker, view.note,
                                      interval=float(getattr(prep.backend, "poll_s", 2.0))):
            for line in follower:
                view.line(line)
    except KeyboardInterrupt:
        handle = follower.handle
        choice = "c"
        if sys.stdin.isatty():
            choice = click.prompt("\n[d]etach (the run goes on) or [c]ancel (checkpoint, then stop)?",
                                  type=click.Choice(["d", "c"]), default="c")
        if choice == "d":
            click.echo(f"detached; follow with: trainpod runs logs -f {handle.run_id}", err=True)
            return
        click.echo("cancelling: the trainer writes a checkpoint before it stops…", err=True)
        prep.backend.cancel(handle)
        interrupted = True
    handle = follower.handle
    status = launcher.final_status(prep.backend, handle)
    local = None
    if status.state == "succeeded" and (local := launcher.download_outputs(prep.settings, handle)) is not None:
        click.echo(f"outputs downloaded to {local}", err=True)
    done = progress.outcome(prep, handle, status, tracker, local_outputs=local, interrupted=interrupted,
                            wall_s=time.monotonic() - started)
    click.echo("\n".join(progress.closing_lines(done)), err=True)
    raise SystemExit(launcher.exit_code_for(status))
