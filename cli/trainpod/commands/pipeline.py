"""``trainpod pipeline run NAME [--from STAGE] [--remote R] [--dry-run]``."""

from __future__ import annotations

import click


@click.group()
def pipeline() -> None:
    """Run [pipelines.NAME]: presets and jobs in order, each stage reading the previous stage's output."""


@pipeline.command("run")
@click.argument("name")
@click.option("--from", "from_stage", metavar="STAGE", help="Start at STAGE, after the last successful earlier stage.")
@click.option("--remote", type=click.Choice(["local", "docker", "runpod"]), default=None,
              help="Backend for every stage (default: the pipeline's, else its first stage's).")
@click.option("--dry-run", is_flag=True, help="Print every stage's exact launch plan (secrets as ***) and stop.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Local output root (default ./runs).")
@click.option("-y", "--yes", is_flag=True, envvar="TRAINPOD_YES",
              help="Run stages on a paid backend without asking (also TRAINPOD_YES=1).")
@click.pass_obj
def run(obj: dict, name: str, from_stage: str | None, remote: str | None, dry_run: bool,
        output_dir: str | None, yes: bool) -> None:
    """Run pipeline NAME; exits non-zero at the first stage that does not succeed."""
    from trainpod import summary
    from trainpod.console import emit_json
    from trainpod.pipeline import plan_pipeline, run_pipeline

    plan = plan_pipeline(name, remote=remote, from_stage=from_stage, config=obj.get("config"),
                         profile=obj.get("profile"), output_dir=output_dir)
    if dry_run:
        emit_json(plan.display())
        return
    stages = [summary.build(s.prepared.plan, summary.gather_facts(s.prepared.plan, s.prepared.settings))
              for s in plan.stages]
    for shown in stages:
        summary.print_summary(shown, err=True)
    summary.confirm_spend(summary.combined(stages, f"pipeline {name}"), yes=yes)
    for stage, handle, status in run_pipeline(plan, on_line=click.echo):
        click.echo(f"stage {stage}: run {handle.run_id} {status.state}; output: {handle.output}", err=True)
