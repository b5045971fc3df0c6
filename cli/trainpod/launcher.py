"""From a preset name to a running (or planned) run: the launcher's one straight line.

    preset + settings + flags ──▶ TrainingConfig ──▶ RunSpec ──▶ backend.plan() ──▶ LaunchPlan
    ──▶ (dry run: print) | backend.submit() ──▶ RunHandle ──▶ follow logs ──▶ exit code
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainpod import deps
from trainpod.backends.base import TERMINAL_STATES, Backend, LaunchPlan, RunHandle, RunStatus, get_backend
from trainpod.catalog_views import resolve_preset
from trainpod.config import Catalog, TrainingConfig, load_catalog
from trainpod.errors import ConfigError, TrainpodError
from trainpod.runs import RunRegistry
from trainpod.settings import Settings, load_settings
from trainpod.spec import LaunchShape, RunSpec, StorageURIs, git_commit, new_run_id, utcnow_iso


@dataclass
class LaunchRequest:
    preset: str
    remote: str | None = None
    dry_run: bool = False
    detach: bool = False
    resume: str | None = None  # a run id, or "latest" for the newest run of this preset
    sets: tuple[str, ...] = ()
    config: str | None = None
    profile: str | None = None
    max_runtime_minutes: float | None = None
    max_cost_usd: float | None = None
    spot: bool | None = None
    output_dir: str | None = None
    allow_long_lived_credentials: bool = False  # RunPod: send the user's own AWS keys when no STS can scope them
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prepared:
    settings: Settings
    catalog: Catalog
    config: TrainingConfig | None  # None for a [jobs.NAME] run (its RunSpec carries the job instead)
    spec: RunSpec
    backend: Backend
    plan: LaunchPlan
    previous: RunHandle | None = None  # the run a --resume continues
    dataset_pin: dict[str, Any] | None = None  # set by pin_dataset(): recorded with the run at submit


REMOTE_OF = {"runpod-cluster": "runpod"}  # backend name -> the --remote that chose it


def launch_shape(cfg: TrainingConfig) -> LaunchShape:
    """One process per GPU; torchrun when there is more than one, deepspeed when the preset asks."""
    nproc = cfg.hardware.procs_per_node
    nnodes = cfg.hardware.nnodes
    if cfg.deepspeed:
        launcher = "deepspeed"
    elif nproc * nnodes > 1:
        launcher = "torchrun"
    else:
        launcher = "python"
    return LaunchShape(launcher=launcher, nproc_per_node=nproc, nnodes=nnodes)


def _flag_overrides(req: LaunchRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if req.max_runtime_minutes is not None:
        out["max_runtime_minutes"] = req.max_runtime_minutes
    if req.max_cost_usd is not None:
        out["max_cost_usd"] = req.max_cost_usd
    if req.spot is not None:
        out["spot"] = req.spot
    return out


def _resume_target(req: LaunchRequest, settings: Settings) -> RunHandle | None:
    if not req.resume:
        return None
    registry = RunRegistry(settings.state_path)
    if req.resume != "latest":
        return registry.get(req.resume)
    runs = [h for h in registry.all() if h.preset == req.preset]
    if not runs:
        raise TrainpodError(f"--resume: no earlier run of preset '{req.preset}' in {registry.dir}",
                            "launch it once without --resume, or pass --resume RUN_ID")
    return runs[-1]


def output_location(settings: Settings, run_id: str, remote: str) -> str:
    if settings.storage_uri:
        return f"{settings.storage_uri.rstrip('/')}/runs/{run_id}"
    if remote == "runpod":
        # the backend refuses this in plan() with a hint; keep a readable placeholder for the error
        return f"<set TRAINPOD_STORAGE_URI>/runs/{run_id}"
    return str((Path(settings.output_dir).expanduser()).resolve() / run_id)


def image_for(cfg: TrainingConfig, settings: Settings, remote: str) -> str | None:
    """The content-addressed image tag a containerised run uses (None for local runs)."""
    if remote == "local" or cfg.hardware.image == "none":
        return None  # docker/runpod plan() refuse image = 'none' with the reason
    from trainpod.images import image_plan

    return image_plan(cfg.hardware_name, cfg.hardware, settings).tag


def prepare(req: LaunchRequest) -> Prepared:
    """Resolve everything and plan, without side effects (what ``--dry-run`` shows)."""
    settings = load_settings(req.profile, config=req.config, output_dir=req.output_dir,
                             allow_long_lived_credentials=req.allow_long_lived_credentials or None)
    catalog = load_catalog(settings.config)
    if req.preset in catalog.jobs:  # [jobs.NAME]: the user's own command (trainpod.jobs)
        from trainpod.jobs import prepare_job

        return prepare_job(req, settings, catalog, _resume_target(req, settings))
    preset = catalog.get("presets", req.preset)
    remote = req.remote or preset.remote
    cfg = resolve_preset(catalog, req.preset, settings.training, req.sets, _flag_overrides(req))
    previous = _resume_target(req, settings)
    if previous is not None and REMOTE_OF.get(previous.backend, previous.backend) != remote:
        raise ConfigError(f"--resume {previous.run_id}: that run used --remote {previous.backend}, not {remote}",
                          f"relaunch with --remote {previous.backend}")
    run_id = previous.run_id if previous else new_run_id(req.preset)
    output = previous.output if previous else output_location(settings, run_id, remote)
    deps.check_preset(req.preset, remote, device=cfg.hardware.device, hardware_name=cfg.hardware_name,
                      deepspeed=bool(cfg.deepspeed), uris=(cfg.dataset.path, output))
    spec = RunSpec(
        run_id=run_id,
        created=utcnow_iso(),
        git_commit=git_commit(),
        remote=remote,
        config=cfg,
        image=image_for(cfg, settings, remote),
        storage=StorageURIs(dataset=cfg.dataset.path,
                            output=output),
        launch=launch_shape(cfg),
        resume=True,
    )
    # several nodes on RunPod: an Instant Cluster (trainpod.backends.runpod_cluster), recorded as runpod-cluster
    backend = get_backend("runpod-cluster" if remote == "runpod" and spec.launch.nnodes > 1 else remote)
    plan = backend.plan(spec, settings)
    return Prepared(settings, catalog, cfg, spec, backend, plan, previous=previous)


def finished_already(prep: Prepared, req: LaunchRequest) -> tuple[RunHandle, RunStatus] | None:
    """With ``--resume``: the resumed run and its status when it has already succeeded. Resuming it
    would have nothing to do, so the caller must not touch it (no trainer, no rewritten record).
    A run that is still going is refused: a second trainer (or pod) would write the same output."""
    if not req.resume:
        return None
    try:
        handle = RunRegistry(prep.settings.state_path).get(prep.spec.run_id)
    except TrainpodError:
        return None
    status = prep.backend.status(handle)
    if status.state in ("pending", "running"):
        raise TrainpodError(f"--resume {handle.run_id}: the run is still {status.state} ({handle.backend})",
                            f"follow it with `trainpod runs logs -f {handle.run_id}`, or stop it first with "
                            f"`trainpod runs cancel {handle.run_id}` and then resume")
    return (handle, status) if status.state == "succeeded" else None


PIN_KEY = "dataset_pin"  # in the run record: {"uri", "sha256", "files": {path: sha256}} of the data it trains on
_PIN_MAX_FILES = 10_000  # beyond this the record keeps only the digest (a refusal then cannot name the files)


def pin_dataset(prep: Prepared) -> Prepared:
    """Record what data the run trains on (the dataset's manifest digest) and re-plan.

    Done at submit, not in the dry-run, because an s3:// dataset needs a request to read its manifest.
    A resumed run keeps the pin it started with: if the data changed since, it is refused (exit 2) naming
    the changed files, rather than resumed on other data.
    """
    from trainpod.manifest import manifest_digest
    from trainpod.storage import dataset_manifest, manifest_changes

    if prep.config is None:  # a custom job: its supervisor pulls the data itself
        return prep
    uri = prep.spec.storage.dataset
    manifest = dataset_manifest(uri, prep.settings)
    digest = manifest_digest(manifest)
    pin: dict[str, Any] = {"uri": uri, "sha256": digest}
    if len(manifest["files"]) <= _PIN_MAX_FILES:
        pin["files"] = {f["path"]: f["sha256"] for f in manifest["files"]}
    if prep.previous is not None:
        old = _previous_pin(prep.previous, prep.settings)
        if old is not None and old["sha256"] != digest:
            changed = manifest_changes(old["files"], manifest) if isinstance(old.get("files"), dict) else []
            what = ("\n".join(f"  {c}" for c in changed) if changed
                    else f"  its content digest is now {digest}, the run was pinned to {old['sha256']}")
            moved = f" (the run was pinned to {old['uri']})" if old.get("uri") not in (None, uri) else ""
            raise TrainpodError(
                f"--resume {prep.previous.run_id}: dataset '{prep.config.dataset_name}' at {uri} changed since the "
                f"run started{moved}; it would resume on other data:\n{what}",
                f"a resumed run trains on the data it was pinned to: restore those files, or start a new run on "
                f"the current data with `trainpod launch {prep.config.preset}` (without --resume)")
        if old is not None:
            pin = old  # the record keeps the pin it started with (and its file list)
    spec = prep.spec.model_copy(update={"dataset_manifest_sha256": digest})
    return Prepared(prep.settings, prep.catalog, prep.config, spec, prep.backend,
                    prep.backend.plan(spec, prep.settings), previous=prep.previous, dataset_pin=pin)


def _previous_pin(handle: RunHandle, settings: Settings) -> dict[str, Any] | None:
    """The pin a run started with: from its record, else (a run recorded before pins were kept there) the
    ``dataset_manifest_sha256`` of the RunSpec in its output. None when neither is there."""
    import json

    from trainpod import storage

    pin = handle.extra.get(PIN_KEY)
    if isinstance(pin, dict) and isinstance(pin.get("sha256"), str):
        return pin
    root = str(handle.extra.get("host_output") or handle.output)
    for name in ("run_spec.json", "run_spec.launch.json"):
        try:
            data = storage.read_bytes(storage.join_uri(root, name), settings)
            digest = json.loads(data).get("dataset_manifest_sha256") if data else None
        except (TrainpodError, ValueError, AttributeError, OSError):
            continue
        if isinstance(digest, str):
            return {"sha256": digest}
    return None


def ensure_image(prep: Prepared, on_line: Callable[[str], None] | None = None) -> None:
    """Build the run's content-addressed image if the engine lacks it, and push it for RunPod.

    Both are no-ops when the tag is already there, so a launch right after `trainpod build/push`
    (or a rebuild of unchanged sources) costs two lookups; a launch after a code change just works.
    """
    if not prep.spec.image or prep.backend.name not in ("docker", "runpod", "runpod-cluster"):
        return
    from trainpod import images

    if prep.config is None:
        _ensure_job_image(prep, on_line)
        return
    cfg = prep.config
    plan = images.image_plan(cfg.hardware_name, cfg.hardware, prep.settings)
    if plan.tag != prep.spec.image:  # the tree changed between plan and submit: launch what was planned
        raise TrainpodError(f"image tag changed since the plan ({prep.spec.image} -> {plan.tag})",
                            "the sources changed while launching; launch again")
    client = images.docker_client()
    images.build(plan, client=client, on_line=on_line)
    if prep.backend.name != "docker":  # RunPod pulls from the registry; the docker backend runs it locally
        images.push(plan, prep.settings, client=client, on_line=on_line)


def _ensure_job_image(prep: Prepared, on_line: Callable[[str], None] | None) -> None:
    """A custom job's image for RunPod: the hardware image (built if missing), the project layer on top, pushed.

    The docker backend builds the project layer itself at submit (it runs it locally, nothing to push); RunPod
    pulls by tag, so the project image must be in the registry before the pod is rented.
    """
    from trainpod import images
    from trainpod.jobs import JobRunSpec

    if prep.backend.name != "runpod" or not isinstance(prep.spec, JobRunSpec):
        return
    job, settings = prep.spec.job, prep.settings
    if job.base_image is None:
        raise TrainpodError(f"run {prep.spec.run_id}: the plan names no base image", "plan it with prepare_job()")
    client = images.docker_client()
    hardware = images.image_plan(job.hardware_name, job.hardware, settings)
    if hardware.tag == job.base_image:  # the default base: build it like a preset run would (a tag when present)
        images.build(hardware, client=client, on_line=on_line)
    project = images.project_image_plan(job.base_image, job.project_dir, job.requirements, settings)
    if project.tag != prep.spec.image:
        raise TrainpodError(f"the project changed since it was planned ({prep.spec.image} -> {project.tag})",
                            "launch again")
    images.build_project(project, client=client, on_line=on_line)
    images.push(project, settings, client=client, on_line=on_line)


def preflight(prep: Prepared) -> None:
    """Checks that take seconds, before anything slow or costly: the backend's own (RunPod: the API key),
    then one bounded request to every S3 bucket the run reads or writes."""
    from trainpod import storage

    check = getattr(prep.backend, "preflight", None)
    if check is not None:
        check(prep.settings)
    spec = prep.spec
    job = getattr(spec, "job", None)
    storage.preflight([spec.storage.dataset, spec.storage.output, getattr(spec, "init_from", None),
                       getattr(job, "sync_uri", None)], prep.settings)


def submit(prep: Prepared, on_line: Callable[[str], None] | None = None) -> tuple[Prepared, RunHandle]:
    preflight(prep)
    prep = pin_dataset(prep)
    ensure_image(prep, on_line)
    handle = prep.backend.submit(prep.plan, prep.settings)
    if prep.dataset_pin is not None:  # what a later --resume checks the data against
        handle = RunRegistry(prep.settings.state_path).update(handle.run_id, **{PIN_KEY: prep.dataset_pin})
    return prep, handle


class Follow:
    """The run's log lines until it ends; a preempted spot run is relaunched (bounded by the backend)
    and followed on. ``handle`` is the current attempt's, for the final status."""

    def __init__(self, backend: Backend, handle: RunHandle, settings: Settings):
        self.backend, self.handle, self.settings = backend, handle, settings
        self.relaunches = 0

    def __iter__(self) -> Iterator[str]:
        printed = 0  # a relaunched pod restores the log and appends to it: skip what was shown already
        while True:
            for i, line in enumerate(self.backend.logs(self.handle, follow=True)):
                if i >= printed:
                    printed += 1
                    yield line
            relaunch = getattr(self.backend, "relaunch", None)
            status = self.backend.status(self.handle)
            if relaunch is None or status.state != "preempted":
                release = getattr(self.backend, "release", None)  # e.g. confirm the pod stopped billing
                if release is not None:
                    yield from release(self.handle, status, self.settings)
                return
            self.relaunches += 1
            yield f"[trainpod] run {self.handle.run_id} was preempted: relaunching (resumes from its last checkpoint)"
            self.handle = relaunch(self.handle, self.settings)


def follow(backend: Backend, handle: RunHandle, settings: Settings | None = None) -> Follow:
    return Follow(backend, handle, settings or load_settings(os.environ.get("TRAINPOD_PROFILE")))


def download_outputs(settings: Settings, handle: RunHandle) -> Path | None:
    """Bring a finished remote run's outputs (adapter, metadata, logs; not checkpoints) to
    ``output_dir/RUN_ID`` and record where in the run registry. None for local outputs."""
    from trainpod import storage

    if not storage.is_s3(handle.output):
        return None
    dest = Path(settings.output_dir).expanduser().resolve() / handle.run_id
    storage.sync_down(handle.output, dest, settings)
    RunRegistry(settings.state_path).update(handle.run_id, downloaded=str(dest), finished=utcnow_iso())
    return dest


def final_status(backend: Backend, handle: RunHandle) -> RunStatus:
    return backend.status(handle)


def exit_code_for(status: RunStatus) -> int:
    if status.exit_code is not None:
        return status.exit_code
    return 0 if status.state == "succeeded" else 1


def is_terminal(status: RunStatus) -> bool:
    return status.state in TERMINAL_STATES


def registry(settings: Settings | None = None) -> RunRegistry:
    settings = settings or load_settings(os.environ.get("TRAINPOD_PROFILE"))
    return RunRegistry(settings.state_path)
