"""``[pipelines.NAME] stages = [...]``: presets and jobs run in order on one backend.

Every stage is planned up front through the same path as ``trainpod launch`` (so ``--dry-run`` shows each
stage's full plan, exactly as it will be submitted), then submitted one after the other; a stage starts only
when the previous one succeeded. Each stage after the first gets the previous stage's output directory:

- a ``[jobs.NAME]`` stage as ``TRAINPOD_PREVIOUS_OUTPUT`` (mounted read-only at ``/previous`` in Docker);
- a built-in preset stage as the RunSpec's ``init_from``: the trainer starts from that output's LoRA adapter (or
  full weights) unless it resumes its own checkpoint (Docker mounts a local one read-only at ``/previous``; RunPod
  needs it on s3://, which is where RunPod stages write). On ``--remote local`` it is also in the environment as
  ``TRAINPOD_PREVIOUS_OUTPUT``.

``--from STAGE`` skips the earlier stages and feeds STAGE the output of the newest successful run of the stage
before it, found in the run registry, where every stage run records ``pipeline``/``pipeline_run``/``stage``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from trainpod.backends import get_backend
from trainpod.backends.base import RunHandle, RunStatus
from trainpod.config import load_catalog
from trainpod.errors import ConfigError, TrainpodError, did_you_mean
from trainpod.launcher import LaunchRequest, Prepared, exit_code_for, follow, prepare, submit
from trainpod.runs import RunRegistry
from trainpod.settings import Settings, load_settings
from trainpod.spec import new_run_id


@dataclass
class Stage:
    name: str
    kind: str  # "job" | "preset"
    prepared: Prepared


@dataclass
class PipelinePlan:
    name: str
    run_id: str
    remote: str
    stages: list[Stage]
    skipped: list[str]
    previous_output: str | None  # what the first planned stage reads (with --from)

    def display(self) -> dict[str, Any]:
        return {"pipeline": self.name, "pipeline_run": self.run_id, "remote": self.remote, "skipped": self.skipped,
                "previous_output": self.previous_output,
                "stages": [{"stage": s.name, "kind": s.kind, "plan": s.prepared.plan.display()} for s in self.stages]}


def _previous_run(registry: RunRegistry, pipeline: str, stage: str, settings: Settings) -> RunHandle:
    """The newest successful run of ``stage`` inside ``pipeline`` (what ``--from`` continues after)."""
    runs = [h for h in registry.all() if h.extra.get("pipeline") == pipeline and h.extra.get("stage") == stage]
    for handle in reversed(runs):
        if get_backend(handle.backend, settings).status(handle).state == "succeeded":
            return handle
    raise TrainpodError(f"--from: no successful run of stage '{stage}' of pipeline '{pipeline}' in {registry.dir}",
                        "run the pipeline from an earlier stage")


def plan_pipeline(name: str, *, remote: str | None = None, from_stage: str | None = None,
                  config: str | None = None, profile: str | None = None, output_dir: str | None = None,
                  base_image: str | None = None) -> PipelinePlan:
    """Plan every stage (pure, apart from reading the run registry for ``--from``)."""
    settings = load_settings(profile, config=config, output_dir=output_dir)
    catalog = load_catalog(settings.config)
    pipe = catalog.get("pipelines", name)
    where = f"{catalog.source('pipelines', name)}: pipelines.{name}.stages"
    for stage in pipe.stages:
        if stage not in catalog.presets and stage not in catalog.jobs:
            known = [*catalog.presets, *catalog.jobs]
            raise ConfigError(f"{where}: '{stage}' is neither a preset nor a job{did_you_mean(stage, known)}",
                              "stages name [presets.NAME] or [jobs.NAME] tables")
    start = 0
    if from_stage is not None:
        if from_stage not in pipe.stages:
            raise ConfigError(f"--from {from_stage}: not a stage of pipeline '{name}'{did_you_mean(from_stage, pipe.stages)}",
                              f"stages: {', '.join(pipe.stages)}")
        start = pipe.stages.index(from_stage)
    first = pipe.stages[start]
    remote = remote or pipe.remote or (catalog.jobs[first].remote if first in catalog.jobs
                                       else catalog.presets[first].remote)
    previous = None
    if start > 0:
        previous = _previous_run(RunRegistry(settings.state_path), name, pipe.stages[start - 1], settings).output
    first_previous = previous
    stages: list[Stage] = []
    for stage in pipe.stages[start:]:
        is_job = stage in catalog.jobs
        extra: dict[str, Any] = {"previous_output": previous} if previous else {}
        if base_image:
            extra["base_image"] = base_image  # a job's project layer on this hardware image
        prep = prepare(LaunchRequest(preset=stage, remote=remote, config=config, profile=profile,
                                     output_dir=output_dir, extra=extra))
        if previous and prep.config is not None:
            notes = [*prep.plan.notes, f"init_from {previous}: training starts from the previous stage's "
                     f"{'adapter' if prep.config.finetune == 'lora' else 'weights'}"]
            prep = replace(prep, plan=prep.plan.model_copy(update={"notes": notes}))
        stages.append(Stage(stage, "job" if is_job else "preset", prep))
        previous = prep.spec.storage.output
    return PipelinePlan(name=name, run_id=new_run_id(name), remote=remote, stages=stages,
                        skipped=pipe.stages[:start], previous_output=first_previous)


def run_pipeline(plan: PipelinePlan, on_line: Callable[[str], None] = print) -> list[tuple[str, RunHandle, RunStatus]]:
    """Submit the stages in order, following each one's log; stop at the first that does not succeed."""
    results: list[tuple[str, RunHandle, RunStatus]] = []
    names = [s.name for s in plan.stages]
    for index, stage in enumerate(plan.stages):
        on_line(f"== pipeline {plan.name}: stage {index + 1}/{len(plan.stages)} '{stage.name}' ({stage.kind})")
        prep, handle = submit(stage.prepared)
        registry = RunRegistry(prep.settings.state_path)
        handle = registry.update(handle.run_id, pipeline=plan.name, pipeline_run=plan.run_id, stage=stage.name,
                                 stage_index=index + len(plan.skipped), stages=[*plan.skipped, *names])
        follower = follow(prep.backend, handle, prep.settings)  # relaunches a preempted spot stage
        for line in follower:
            on_line(line)
        handle = follower.handle
        status = prep.backend.status(handle)
        results.append((stage.name, handle, status))
        if status.state != "succeeded":
            raise TrainpodError(
                f"pipeline {plan.name}: stage '{stage.name}' {status.state} (run {handle.run_id}, "
                f"exit code {exit_code_for(status)}){': ' + status.detail if status.detail else ''}",
                f"fix it, then continue with: trainpod pipeline run {plan.name} --from {stage.name}")
    return results
