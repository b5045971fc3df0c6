"""From a preset name to a running (or planned) run: the launcher's one straight line.

    preset + settings + flags ──▶ TrainingConfig ──▶ RunSpec ──▶ backend.plan() ──▶ LaunchPlan
    ──▶ (dry run: print) | backend.submit() ──▶ RunHandle ──▶ follow logs ──▶ exit code
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainpod import deps
from trainpod.backends import get_backend
from trainpod.backends.base import Backend, LaunchPlan, RunHandle, RunStatus
from trainpod.catalog_views import resolve_preset
from trainpod.config import Catalog, TrainingConfig, load_catalog
from trainpod.config.schema import Job
from trainpod.errors import ConfigError, TrainpodError
from trainpod.follow import (  # after submit; callers of the launcher find these here too
    Follow,
    cancel_run,
    download_outputs,
    exit_code_for,
    final_status,
    follow,
    is_terminal,
    registry,
)
from trainpod.runs import RunRegistry
from trainpod.settings import Settings, load_settings
from trainpod.spec import (
    CommandWorkload,
    LaunchShape,
    RunSpec,
    StorageURIs,
    TrainerWorkload,
    git_commit,
    new_run_id,
    utcnow_iso,
)


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


@dataclass(frozen=True)
class Prepared:
    """A planned run: what ``--dry-run`` prints, and everything ``submit`` needs without computing it again."""

    settings: Settings
    catalog: Catalog
    spec: RunSpec
    backend: Backend
    plan: LaunchPlan
    previous: RunHandle | None = None  # the run a --resume continues
    dataset_pin: dict[str, Any] | None = None  # set by pin_dataset(): recorded with the run at submit
    images: tuple[Any, ...] = ()  # image plans the run needs, base first (hardware, then a job's project layer)

    @property
    def config(self) -> TrainingConfig | None:
        """The preset's resolved config (None for a custom job, whose workload is a command)."""
        return self.spec.workload.config if isinstance(self.spec.workload, TrainerWorkload) else None

    def replan(self, spec: RunSpec) -> Prepared:
        return replace(self, spec=spec, plan=self.backend.plan(spec))


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


def resolve_job(catalog: Any, name: str) -> Job:
    job: Job = catalog.get("jobs", name)
    if name in catalog.presets:
        raise ConfigError(f"{catalog.source('jobs', name)}: jobs.{name}: a preset has the same name",
                          "rename the job: `trainpod launch NAME` must mean one thing")
    catalog.get("hardware", job.hardware, referenced_by=f"{catalog.source('jobs', name)}: jobs.{name}.hardware")
    return job


@dataclass(frozen=True)
class _Resolved:
    """What a preset or a job table resolves to before the run gets its id and its place."""

    workload: TrainerWorkload | CommandWorkload
    remote: str
    launch: LaunchShape
    dataset: str
    stop_grace_seconds: float


def _trainer(req: LaunchRequest, settings: Settings, catalog: Catalog) -> _Resolved:
    preset = catalog.get("presets", req.preset)
    cfg = resolve_preset(catalog, req.preset, settings.training, req.sets, _flag_overrides(req))
    return _Resolved(TrainerWorkload(config=cfg), req.remote or preset.remote, launch_shape(cfg), cfg.dataset.path,
                     RunSpec.model_fields["stop_grace_seconds"].default)


def _command(req: LaunchRequest, settings: Settings, catalog: Catalog) -> _Resolved:
    job = resolve_job(catalog, req.preset)
    if req.sets:
        raise ConfigError(f"--set {req.sets[0]}: {req.preset} is a job; --set changes built-in training keys",
                          f"change the job's command in {catalog.source('jobs', req.preset)} instead")
    work = CommandWorkload(
        name=req.preset, hardware_name=job.hardware, hardware=catalog.get("hardware", job.hardware),
        project_dir=job.project_dir, command=job.command, requirements=job.requirements, env=job.env,
        max_runtime_minutes=req.max_runtime_minutes or job.max_runtime_minutes,
        max_cost_usd=req.max_cost_usd or job.max_cost_usd, spot=job.spot if req.spot is None else req.spot,
        sync_interval_seconds=job.sync_interval_seconds, log_sync_interval_seconds=job.log_sync_interval_seconds)
    return _Resolved(work, req.remote or job.remote, LaunchShape(launcher=job.launcher,
                                                                 nproc_per_node=job.nproc_per_node),
                     job.data or "", job.stop_grace_seconds)


def plan_images(work: TrainerWorkload | CommandWorkload, settings: Settings, remote: str,
                base_image: str | None = None) -> tuple[Any, ...]:
    """The images a containerised run needs, base first, each tag computed (its build context hashed) once: the
    hardware image, and for a command the project layer on it (on ``base_image`` when given). Empty for a local
    run; docker/runpod plan() refuse hardware with image = 'none', with the reason."""
    if remote == "local" or work.hardware.image == "none":
        return ()
    from trainpod.images import image_plan, project_image_plan

    if isinstance(work, TrainerWorkload):
        return (image_plan(work.hardware_name, work.hardware, settings),)
    base = () if base_image else (image_plan(work.hardware_name, work.hardware, settings),)
    project = project_image_plan(base_image or base[0].tag, work.project_dir, work.requirements, settings)
    return (*base, project)


def prepare(req: LaunchRequest) -> Prepared:
    """Resolve everything and plan, without side effects (what ``--dry-run`` shows). A preset runs the built-in
    trainer, a ``[jobs.NAME]`` table its own command: one RunSpec, one backend, one plan either way.

    ``req.extra["previous_output"]`` (pipelines) becomes the spec's ``init_from``; ``req.extra["base_image"]``
    puts a job's project layer on another hardware image."""
    settings = load_settings(req.profile, config=req.config, output_dir=req.output_dir,
                             allow_long_lived_credentials=req.allow_long_lived_credentials or None)
    catalog = load_catalog(settings.config)
    is_job = req.preset in catalog.jobs
    got = (_command if is_job else _trainer)(req, settings, catalog)
    previous = _resume_target(req, settings)
    if previous is not None and REMOTE_OF.get(previous.backend, previous.backend) != got.remote:
        raise ConfigError(f"--resume {previous.run_id}: that run used --remote {previous.backend}, not {got.remote}",
                          f"relaunch with --remote {previous.backend}")
    run_id = previous.run_id if previous else new_run_id(req.preset)
    work, output = got.workload, output_location(settings, run_id, got.remote)
    if isinstance(work, CommandWorkload):
        # the run's S3 home is where a job's outputs are mirrored; on a pod, where they live (its disk vanishes)
        sync_uri = output if settings.storage_uri else None
        if not (got.remote == "runpod" and sync_uri):
            output = str(Path(settings.output_dir).expanduser().resolve() / run_id)
        work = work.model_copy(update={"sync_uri": sync_uri})
    images = plan_images(work, settings, got.remote, req.extra.get("base_image"))
    if isinstance(work, CommandWorkload) and images:
        work = work.model_copy(update={"base_image": images[-1].base_image})
    output = previous.output if previous else output
    if isinstance(work, TrainerWorkload):
        cfg = work.config
        deps.check_preset(req.preset, got.remote, device=cfg.hardware.device, hardware_name=cfg.hardware_name,
                          deepspeed=bool(cfg.deepspeed), uris=(cfg.dataset.path, output))
    else:
        deps.require(*deps.features_for(got.remote, uris=(got.dataset or None, output)),
                     context=f"{req.preset} --remote {got.remote}")
    spec = RunSpec(
        run_id=run_id, created=utcnow_iso(), git_commit=git_commit(), remote=got.remote, workload=work,
        image=images[-1].tag if images else None,
        storage=StorageURIs(dataset=got.dataset, output=output),
        launch=got.launch, init_from=req.extra.get("previous_output"), stop_grace_seconds=got.stop_grace_seconds,
        # a preset's trainer always resumes its own latest complete checkpoint; a job only when asked (--resume)
        resume=not is_job or previous is not None,
    )
    # several nodes on RunPod: an Instant Cluster (trainpod.backends.runpod_cluster), recorded as runpod-cluster
    multi_node_pod = got.remote == "runpod" and spec.launch.nnodes > 1
    backend = get_backend("runpod-cluster" if multi_node_pod else got.remote, settings)
    return Prepared(settings, catalog, spec, backend, backend.plan(spec), previous=previous, images=images)


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
    """Record what data the trainer trains on (the dataset's manifest digest) and re-plan.

    Done at submit, not in the dry-run, because an s3:// dataset needs a request to read its manifest.
    A resumed run keeps the pin it started with: if the data changed since, it is refused (exit 2) naming
    the changed files, rather than resumed on other data. A command's supervisor pulls its data itself, as it is.
    """
    from trainpod.manifest import manifest_digest
    from trainpod.storage import dataset_manifest, manifest_changes

    if not isinstance(prep.spec.workload, TrainerWorkload):
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
    return replace(prep.replan(spec), dataset_pin=pin)


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


def ensure_images(prep: Prepared, on_line: Callable[[str], None] | None = None) -> None:
    """Build the run's images the engine lacks, base first (the hardware image, then a job's project layer), and
    push the last one when the target pulls from the registry (RunPod). The tags are the ones ``prepare``
    computed: nothing is hashed again. Each step is a lookup when the image is already there."""
    if not prep.images:
        return
    from trainpod import images

    client = images.docker_client()
    for plan in prep.images:
        if isinstance(plan, images.ProjectImagePlan):
            images.build_project(plan, client=client, on_line=on_line)
        else:
            images.build(plan, client=client, on_line=on_line)
    if prep.backend.pulls_images:  # the docker backend runs the image on this engine
        images.push(prep.images[-1], prep.settings, client=client, on_line=on_line)


def preflight(prep: Prepared) -> None:
    """Checks that take seconds, before anything slow or costly: the backend's own (RunPod: the API key),
    then one bounded request to every S3 bucket the run reads or writes."""
    from trainpod import storage

    prep.backend.preflight(prep.settings)
    spec = prep.spec
    storage.preflight([spec.storage.dataset, spec.storage.output, spec.init_from, spec.output_uri], prep.settings)


def submit(prep: Prepared, on_line: Callable[[str], None] | None = None, *,
           preflighted: bool = False) -> tuple[Prepared, RunHandle]:
    """Preflight (unless the caller just did, e.g. before asking to confirm), pin the data, build/push the
    image, submit."""
    if not preflighted:
        preflight(prep)
    prep = pin_dataset(prep)
    ensure_images(prep, on_line)
    handle = prep.backend.submit(prep.plan)
    if prep.dataset_pin is not None:  # what a later --resume checks the data against
        handle = RunRegistry(prep.settings.state_path).update(handle.run_id, **{PIN_KEY: prep.dataset_pin})
    return prep, handle


__all__ = ["Follow", "LaunchRequest", "Prepared", "cancel_run", "download_outputs", "ensure_images", "exit_code_for",
           "final_status", "finished_already", "follow", "is_terminal", "pin_dataset", "plan_images", "prepare",
           "preflight", "registry", "resolve_job", "submit"]
