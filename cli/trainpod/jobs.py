"""``[jobs.NAME]``: the user's own training command, launched like a preset (``trainpod launch NAME``).

    [jobs.NAME] ──▶ JobSpec ──▶ JobRunSpec (a RunSpec with ``job`` instead of ``config``) ──▶ backend plan
    inside the target: ``python -m trainpod.jobrun`` (pull data, find the resume checkpoint, run the command
    under its launcher with the TRAINPOD_* contract, forward SIGTERM, sync outputs to S3, DONE last)

Why a supervisor (:mod:`trainpod.jobrun`) instead of running the command directly: custom code should only
have to write files and honour SIGTERM; S3 sync, the DONE marker, status.json and the max-runtime guard are the
same for every job, so they live in one place and every backend's status/logs/cancel work unchanged.

The local and docker backends are reused: :class:`JobLocalBackend` / :class:`JobDockerBackend` override only
``plan`` and ``submit`` (which read a preset's TrainingConfig); status, logs and cancel work on run handles and
need nothing job-specific. On RunPod (:class:`JobRunPodBackend`) the pod supervisor wraps jobrun.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from trainpod import deps
from trainpod.backends.base import LaunchPlan, Mount, RunHandle
from trainpod.backends.docker import (
    DATA_TARGET,
    IMAGE_UID,
    LABEL_PREFIX,
    OUTPUT_TARGET,
    PREVIOUS_TARGET,
    DockerBackend,
    _scrub,
    docker_run_line,
)
from trainpod.backends.local import LocalBackend, _children
from trainpod.backends.runpod import RunPodBackend
from trainpod.config.schema import Hardware, Job, Strict, TrainingConfig
from trainpod.contract import (
    ENV_RUN_SPEC,
    ENV_STOP_GRACE,
    POD_OUTPUT,
    PROJECT_TARGET,
    WORKSPACE,
    s3_env,
    secret_env_names,
    secret_env_values,
)
from trainpod.errors import ConfigError, TrainpodError, UnsupportedError
from trainpod.runs import RunRegistry
from trainpod.settings import Settings
from trainpod.spec import LaunchShape, RunSpec, StorageURIs, git_commit, new_run_id, utcnow_iso

if TYPE_CHECKING:
    from trainpod.launcher import LaunchRequest, Prepared

SPEC_NAME = "job_spec.json"
SUPERVISOR = ["-m", "trainpod.jobrun"]


class JobSpec(Strict):
    """A ``[jobs.NAME]`` table resolved for one run: absolute paths, where outputs are mirrored, the stage input."""

    name: str
    hardware_name: str
    hardware: Hardware
    project_dir: str
    command: list[str] = Field(min_length=1)
    requirements: str | None = None
    launcher: Literal["python", "torchrun", "deepspeed"] = "python"
    nproc_per_node: int = 1
    data: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    sync_uri: str | None = Field(default=None, description="s3:// prefix the output directory is mirrored to")
    previous_output: str | None = Field(default=None, description="the previous pipeline stage's output")
    max_runtime_minutes: float | None = None
    max_cost_usd: float | None = None
    spot: bool = False
    sync_interval_seconds: float = 60.0
    log_sync_interval_seconds: float = 10.0
    base_image: str | None = Field(default=None, description="hardware image under the project layer (containers)")

    @property
    def preset(self) -> str:
        """The name backends and the run registry show for this run (a job stands where a preset would)."""
        return self.name

    def argv(self) -> list[str]:
        """The command under its launcher; ``python`` is resolved to the target's interpreter by jobrun.

        torchrun and deepspeed both start through ``torch.distributed.run`` (see trainpod.launchcmd: no SSH
        fan-out); a DeepSpeed script initialises from the torchrun environment.
        """
        if self.launcher == "python":
            return list(self.command)
        if Path(self.command[0]).name not in ("python", "python3"):
            raise ConfigError(f"jobs.{self.name}: launcher '{self.launcher}' needs command = ['python', SCRIPT, ...]",
                              "torchrun starts a Python script or `-m module` once per process")
        return ["python", "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={self.nproc_per_node}",
                "--max-restarts=0", *self.command[1:]]


class JobRunSpec(RunSpec):
    """A RunSpec whose ``job`` replaces the built-in trainer's ``config`` (which stays None)."""

    config: TrainingConfig | None = None  # type: ignore[assignment]
    job: JobSpec


def resolve_job(catalog: Any, name: str) -> Job:
    job: Job = catalog.get("jobs", name)
    if name in catalog.presets:
        raise ConfigError(f"{catalog.source('jobs', name)}: jobs.{name}: a preset has the same name",
                          "rename the job: `trainpod launch NAME` must mean one thing")
    catalog.get("hardware", job.hardware, referenced_by=f"{catalog.source('jobs', name)}: jobs.{name}.hardware")
    return job


def job_backend(remote: str) -> LocalBackend | DockerBackend | JobRunPodBackend:
    if remote == "local":
        return JobLocalBackend()
    if remote == "docker":
        return JobDockerBackend()
    if remote == "runpod":
        return JobRunPodBackend()
    raise ConfigError(f"unknown remote '{remote}'", "use local, docker or runpod")


def prepare_job(req: LaunchRequest, settings: Settings, catalog: Any, previous: RunHandle | None,
                *, base_image: str | None = None) -> Prepared:
    """Resolve ``[jobs.NAME]`` into a JobRunSpec and a backend plan. Pure like the preset path.

    ``previous`` is the run to resume (its id and output are reused). ``req.extra["previous_output"]`` is set
    by pipelines; ``base_image`` overrides the hardware image the project layer sits on.
    """
    from trainpod.launcher import Prepared, output_location

    job = resolve_job(catalog, req.preset)
    if req.sets:
        raise ConfigError(f"--set {req.sets[0]}: {req.preset} is a job; --set changes built-in training keys",
                          f"change the job's command in {catalog.source('jobs', req.preset)} instead")
    remote = req.remote or job.remote
    if previous is not None and previous.backend != remote:
        raise ConfigError(f"--resume {previous.run_id}: that run used --remote {previous.backend}, not {remote}",
                          f"relaunch with --remote {previous.backend}")
    backend = job_backend(remote)
    hw: Hardware = catalog.get("hardware", job.hardware)
    run_id = previous.run_id if previous else new_run_id(req.preset)
    local_out = Path(settings.output_dir).expanduser().resolve() / run_id
    sync_uri = None
    if settings.storage_uri:  # the run's S3 home, where outputs are mirrored (same place a preset run writes)
        sync_uri = output_location(settings, run_id, remote)
    # on a pod the local dir is scratch space that vanishes: the run's output is its S3 mirror
    output = previous.output if previous else (sync_uri if remote == "runpod" and sync_uri else str(local_out))
    deps.require(*deps.features_for(remote, uris=(job.data, output)), context=f"{req.preset} --remote {remote}")
    max_runtime = req.max_runtime_minutes or job.max_runtime_minutes
    spec_job = JobSpec(name=req.preset, hardware_name=job.hardware, hardware=hw, project_dir=job.project_dir,
                       command=job.command, requirements=job.requirements, launcher=job.launcher,
                       nproc_per_node=job.nproc_per_node, data=job.data, env=job.env, sync_uri=sync_uri,
                       previous_output=req.extra.get("previous_output"), max_runtime_minutes=max_runtime,
                       max_cost_usd=req.max_cost_usd or job.max_cost_usd,
                       spot=job.spot if req.spot is None else req.spot,
                       sync_interval_seconds=job.sync_interval_seconds,
                       log_sync_interval_seconds=job.log_sync_interval_seconds)
    spec_job.argv()  # refuse a launcher/command mismatch in the plan, before anything starts
    image = None
    if remote != "local":
        from trainpod.images import image_plan, project_image_plan

        base_image = base_image or image_plan(job.hardware, hw, settings).tag
        image = project_image_plan(base_image, job.project_dir, job.requirements, settings).tag
        spec_job = spec_job.model_copy(update={"base_image": base_image})
    spec = JobRunSpec(run_id=run_id, created=utcnow_iso(), git_commit=git_commit(), remote=remote, image=image,
                      storage=StorageURIs(dataset=job.data or "", output=output), job=spec_job,
                      stop_grace_seconds=job.stop_grace_seconds, resume=previous is not None,
                      launch=LaunchShape(launcher=job.launcher, nproc_per_node=job.nproc_per_node))
    plan = backend.plan(spec, settings)
    return Prepared(settings, catalog, None, spec, backend, plan)


def _job(spec: RunSpec) -> JobSpec:
    job = getattr(spec, "job", None)
    if not isinstance(job, JobSpec):
        raise TrainpodError(f"run {spec.run_id} is not a custom job", "launch presets with the preset backends")
    return job


def _registry_extra(job: JobSpec) -> dict[str, Any]:
    return {"job": job.name, "sync_uri": job.sync_uri, "previous_output": job.previous_output}


class JobLocalBackend(LocalBackend):
    """``--remote local``: the supervisor as a subprocess, the command in ``project_dir``."""

    def unsupported(self, spec: RunSpec) -> list[str]:
        job = _job(spec)
        if job.data and not job.data.startswith("s3://") and not Path(job.data).is_dir():
            return [f"jobs.{job.name}.data: {job.data} is not a directory"]
        return []

    def plan(self, spec: RunSpec, settings: Settings) -> LaunchPlan:
        reasons = self.unsupported(spec)
        if reasons:
            raise UnsupportedError("; ".join(reasons))
        job = _job(spec)
        spec_path = str(Path(spec.storage.output) / SPEC_NAME)
        return LaunchPlan(
            backend=self.name, run_id=spec.run_id, command=[sys.executable, *SUPERVISOR, "--spec", spec_path],
            env={"PYTHONUNBUFFERED": "1"}, secret_env=_secret_names(settings), workdir=job.project_dir, spec=spec,
            notes=[f"runs {job.argv()} in {job.project_dir}", f"outputs under {spec.storage.output}"]
            + ([f"mirrored to {job.sync_uri}"] if job.sync_uri else []),
        )

    def submit(self, plan: LaunchPlan, settings: Settings) -> RunHandle:
        spec, job = plan.spec, _job(plan.spec)
        out = Path(spec.storage.output)
        (out / "logs").mkdir(parents=True, exist_ok=True)
        spec.write(out / SPEC_NAME)
        (out / "status.json").unlink(missing_ok=True)  # a resumed run must not report the last attempt's status
        env = {**os.environ, **plan.env, **_secret_values(plan, settings)}
        train_log = out / "logs" / "train.log"
        log_offset = train_log.stat().st_size if train_log.exists() else 0
        with open(out / "logs" / "launcher.log", "ab") as log:
            proc = subprocess.Popen(plan.command, cwd=job.project_dir, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _children[proc.pid] = proc
        handle = RunHandle(run_id=spec.run_id, backend=self.name, preset=job.name, provider_id=str(proc.pid),
                           output=str(out), created=utcnow_iso(),
                           extra={"started": time.time(), "command": plan.command, "log_offset": log_offset,
                                  "stop_grace_seconds": spec.stop_grace_seconds, **_registry_extra(job)})
        RunRegistry(settings.state_path).save(handle)
        return handle


class JobDockerBackend(DockerBackend):
    """``--remote docker``: the project image (hardware image + project layer), supervisor as PID 1."""

    def unsupported(self, spec: RunSpec) -> list[str]:
        job = _job(spec)
        if job.hardware.image == "none":
            return [f"hardware '{job.hardware_name}' has no container image; use --remote local"]
        return []

    def plan(self, spec: RunSpec, settings: Settings) -> LaunchPlan:
        reasons = self.unsupported(spec)
        if reasons:
            raise UnsupportedError("docker backend cannot run this job: " + "; ".join(reasons))

        job = _job(spec)
        assert spec.image is not None
        mounts = [Mount(source=str(Path(spec.storage.output).resolve()), target=OUTPUT_TARGET)]
        data = job.data
        if data and not data.startswith("s3://"):
            mounts.append(Mount(source=str(Path(data).resolve()), target=DATA_TARGET, read_only=True))
            data = DATA_TARGET
        previous = job.previous_output
        if previous and not previous.startswith("s3://"):
            mounts.append(Mount(source=str(Path(previous).resolve()), target=PREVIOUS_TARGET, read_only=True))
            previous = PREVIOUS_TARGET
        inner_job = job.model_copy(update={"project_dir": PROJECT_TARGET, "data": data, "previous_output": previous})
        inner = spec.model_copy(update={"job": inner_job,
                                        "storage": StorageURIs(dataset=data or "", output=OUTPUT_TARGET)})
        env = {ENV_RUN_SPEC: inner.to_json(), "PYTHONUNBUFFERED": "1"}
        env.update(s3_env(settings))
        user = None if self.uid == 0 else f"{self.uid}:{self.gid}"
        if user:
            env["HOME"] = WORKSPACE
        request: dict[str, Any] = {
            "image": spec.image, "name": spec.run_id, "command": ["python", *SUPERVISOR],
            "working_dir": PROJECT_TARGET, "network_mode": "host", "stop_signal": "SIGTERM",
            "labels": {f"{LABEL_PREFIX}.run-id": spec.run_id, f"{LABEL_PREFIX}.preset": job.name,
                       f"{LABEL_PREFIX}.hardware": job.hardware_name, f"{LABEL_PREFIX}.backend": self.name,
                       f"{LABEL_PREFIX}.stop-grace-seconds": f"{spec.stop_grace_seconds:g}"},
        }
        if user:
            request["user"] = user
        if job.hardware.device == "cuda":
            request["ipc_mode"] = "host"
            request["device_requests"] = [{"count": job.hardware.gpu_count, "capabilities": [["gpu"]]}]
        else:
            request["shm_size"] = "2g"
        plan = LaunchPlan(backend=self.name, run_id=spec.run_id, image=spec.image, command=request["command"],
                          env=env, secret_env=_secret_names(settings),
                          mounts=mounts, workdir=PROJECT_TARGET, spec=spec,
                          gpus=job.hardware.gpu_count if job.hardware.device == "cuda" else 0,
                          notes=[f"runs {job.argv()} in {PROJECT_TARGET}", f"output on the host: {mounts[0].source}"])
        return plan.model_copy(update={"provider_request": {"container": request,
                                                              "docker_run": docker_run_line(plan, request)}})

    def submit(self, plan: LaunchPlan, settings: Settings) -> RunHandle:
        """Build the project layer if needed, then start the container like the preset backend does."""
        import docker.errors

        from trainpod.images import build_project, docker_client, project_image_plan

        job = _job(plan.spec)
        client = docker_client()
        assert plan.image is not None
        if job.base_image is None:
            raise TrainpodError(f"run {plan.run_id}: the plan names no base image", "plan it with prepare_job()")
        project = project_image_plan(job.base_image, job.project_dir, job.requirements, settings)
        if project.tag != plan.image:
            raise TrainpodError(f"the project changed since it was planned ({plan.image} -> {project.tag})",
                                "launch again")
        build_project(project, client=client)
        for m in plan.mounts:
            if not m.read_only:
                Path(m.source).mkdir(parents=True, exist_ok=True)
                if self.uid == 0:
                    os.chown(m.source, IMAGE_UID, IMAGE_UID)
        request = dict(plan.provider_request["container"])
        if "device_requests" in request:
            from docker.types import DeviceRequest

            request["device_requests"] = [DeviceRequest(**d) for d in request["device_requests"]]
        volumes = {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in plan.mounts}
        env = {**plan.env, **_secret_values(plan, settings)}
        try:
            container = client.containers.run(detach=True, environment=env, volumes=volumes, **request)
        except docker.errors.APIError as exc:
            raise TrainpodError(f"docker could not start the job container: {_scrub(str(exc), settings.secrets())}",
                                "is a container with this run id left over? `docker rm RUN_ID`") from None
        handle = RunHandle(run_id=plan.run_id, backend=self.name, preset=job.name, provider_id=container.id,
                           output=plan.spec.storage.output, created=utcnow_iso(),
                           extra={"image": plan.image, "container": plan.run_id, "host_output": plan.mounts[0].source,
                                  "stop_grace_seconds": plan.spec.stop_grace_seconds, **_registry_extra(job)})
        RunRegistry(settings.state_path).save(handle)
        return handle


class JobRunPodBackend(RunPodBackend):
    """``--remote runpod`` for a job: one pod runs the pushed project image under the pod supervisor.

    The pod's command is ``python -m trainpod.podside -- python -m trainpod.jobrun``: podside gives the job the
    presets' guarantees (DONE check in the S3 mirror, watchdog on max runtime/cost, POD_EXIT restart guard,
    self-terminate), jobrun runs the user's command and mirrors the pod-local output to ``job.sync_uri``, which is
    the run's output. ``launcher.ensure_image`` builds and pushes the project image before ``submit`` rents the
    pod. status/logs/cancel are the preset backend's: they only read the handle and the S3 output.

    ``spot = true`` (or ``--spot``) rents an interruptible pod; a preempted one is relaunched (bounded, like a
    preset's) with ``resume``: jobrun takes the mirror's files back and hands the command its latest complete
    checkpoint as ``TRAINPOD_RESUME_DIR``. Capacity errors fall back to the profile's
    ``runpod_fallback_gpu_type_ids``.
    """

    def unsupported(self, spec: RunSpec, cpu_stand_in: bool = False) -> list[str]:
        """Why the job cannot run on a pod. ``cpu_stand_in`` (settings.runpod_cpu_stand_in, tests only) lets a
        CPU profile that names a runpod_gpu_type_id through, as for presets."""
        job = _job(spec)
        hw, reasons = job.hardware, []
        stand_in = cpu_stand_in and hw.device == "cpu" and hw.image == "cpu" and bool(hw.runpod_gpu_type_id)
        if not stand_in and (hw.device != "cuda" or not hw.runpod_gpu_type_id or hw.image != "cuda"):
            reasons.append(f"hardware '{job.hardware_name}' is not a RunPod GPU profile (device=cuda, image=cuda, "
                           "runpod_gpu_type_id)")
        if not job.sync_uri:
            reasons.append("RunPod jobs must mirror their output to S3: set TRAINPOD_STORAGE_URI=s3://BUCKET/prefix")
        if job.data and not job.data.startswith("s3://"):
            reasons.append(f"jobs.{job.name}.data is local ({job.data}); push it with `trainpod data push` and use s3://")
        if not (job.max_runtime_minutes or job.max_cost_usd):
            reasons.append("a RunPod job needs a money guard: pass --max-runtime MINUTES and/or --max-cost USD")
        return reasons

    def plan(self, spec: RunSpec, settings: Settings) -> LaunchPlan:
        import shlex

        from trainpod import credentials
        from trainpod.backends.runpod import (
            LEGACY_GRAPHQL,
            POD_SUPERVISOR,
            RUNPOD_CUDA_VERSIONS,
            allowed_cuda_versions,
            pod_name,
            pod_provider_request,
        )
        from trainpod.backends.runpod_api import PodRequest

        reasons = self.unsupported(spec, cpu_stand_in=settings.runpod_cpu_stand_in)
        if reasons:
            raise UnsupportedError("cannot run this job on RunPod:\n  - " + "\n  - ".join(reasons),
                                   "pick a cloud-* hardware profile, or --remote local/docker")
        if not settings.registry:
            raise UnsupportedError("no registry RunPod can pull the project image from",
                                   "set TRAINPOD_REGISTRY; the project image is pushed next to the hardware image")
        job = _job(spec)
        hw = job.hardware
        assert spec.image is not None and hw.runpod_gpu_type_id is not None
        # a CUDA image needs a driver at least as new as its CUDA; the CPU stand-in (tests only) runs anywhere
        cuda = allowed_cuda_versions(hw.cuda_version) if hw.cuda_version else list(RUNPOD_CUDA_VERSIONS)
        inner = spec.model_copy(update={
            "job": job.model_copy(update={"project_dir": PROJECT_TARGET}),
            "storage": StorageURIs(dataset=job.data or "", output=POD_OUTPUT)})
        command = [*POD_SUPERVISOR, "python", *SUPERVISOR]
        env = {**hw.env, ENV_RUN_SPEC: inner.to_json(), "PYTHONUNBUFFERED": "1",
               ENV_STOP_GRACE: f"{spec.stop_grace_seconds:g}", **s3_env(settings, key_id=False)}
        secret_names = credentials.pod_secret_names(spec, settings)  # S3: a run-scoped session minted at submit
        cloud = RunPodBackend._cloud_type(settings, hw.runpod_cloud_type)
        price = hw.price_per_gpu_hour
        request = PodRequest(name=pod_name(spec.run_id), image=spec.image, gpu_type_id=hw.runpod_gpu_type_id,
                             gpu_count=max(1, hw.gpu_count), cloud_type=cloud,
                             container_disk_gb=hw.container_disk_gb,
                             env={**env, **{n: "***" for n in secret_names}}, docker_args=shlex.join(command),
                             allowed_cuda_versions=cuda if job.spot else (),
                             min_cuda_version=None if job.spot else hw.cuda_version,
                             bid_per_gpu=(price or 0.0) if job.spot else None)
        estimate = None
        notes = [f"the pod runs {job.argv()} in {PROJECT_TARGET} under trainpod.podside (DONE check, watchdog, "
                 "self-terminate)", f"outputs mirrored to {job.sync_uri}"]
        if job.spot:
            notes.append("spot: submit bids the API's live spot price; a preempted pod is relaunched and the command "
                         "resumes from its latest complete checkpoint in the mirror")
            notes.append("spot pods use " + LEGACY_GRAPHQL)
        gpus = max(1, hw.gpu_count)  # a pod has at least one GPU (the CPU stand-in too)
        if price is not None and job.max_runtime_minutes:  # a custom script's duration is unknown: bound it
            estimate = self._job_estimate(job, price)
            notes.append(f"estimate: ${price:g}/GPU-h x {gpus} GPU x {job.max_runtime_minutes / 60:.2f} h "
                         f"(max_runtime) = ${estimate:.2f}")
        elif price is not None and job.max_cost_usd:
            notes.append(f"duration capped by max_cost_usd: {job.max_cost_usd / (price * gpus):.2f} h")
        notes.extend(f"WARNING: {w}" for w in credentials.warnings(spec, settings))
        return LaunchPlan(backend=self.name, run_id=spec.run_id, image=spec.image, command=command, env=env,
                          secret_env=secret_names, workdir=PROJECT_TARGET, gpus=hw.gpu_count, spec=spec,
                          estimated_cost_usd=estimate, notes=notes,
                          credentials=credentials.describe(spec, settings),
                          provider_request={**pod_provider_request(
                                                request, secret_names,
                                                [hw.runpod_gpu_type_id, *hw.runpod_fallback_gpu_type_ids]),
                                            "gpu_type_id": hw.runpod_gpu_type_id, "cloud_type": cloud,
                                            "cuda_floor": hw.cuda_version,
                                            "max_runtime_minutes": job.max_runtime_minutes,
                                            "max_cost_usd": job.max_cost_usd, "spot": job.spot})

    @staticmethod
    def _job_estimate(job: JobSpec, price: float) -> float:
        """Price x GPUs x max_runtime, refused when over max_cost_usd (checked in plan and with live prices)."""
        assert job.max_runtime_minutes is not None
        estimate = round(price * max(1, job.hardware.gpu_count) * job.max_runtime_minutes / 60, 2)
        if job.max_cost_usd is not None and estimate > job.max_cost_usd:
            raise UnsupportedError(f"max_runtime would cost ${estimate:.2f}, over max_cost_usd "
                                   f"${job.max_cost_usd:.2f}", "lower --max-runtime or raise --max-cost")
        return estimate

    # RunPodBackend.submit/relaunch/_rent rent the pod (live price re-checked against max_cost, GPU fallbacks,
    # bounded start, recorded as soon as it exists); a job differs in these three:
    def _estimate_at(self, plan: LaunchPlan, price: float) -> float | None:
        job = _job(plan.spec)
        return self._job_estimate(job, price) if job.max_runtime_minutes else None  # over max_cost: refused

    def _record(self, plan: LaunchPlan) -> tuple[str, dict[str, Any]]:
        spec, job = plan.spec, _job(plan.spec)
        return job.name, {"max_runtime_minutes": job.max_runtime_minutes, "max_cost_usd": job.max_cost_usd,
                          "job_spec": spec.model_dump(mode="json"), **_registry_extra(job)}

    def _relaunch_plan(self, handle: RunHandle, settings: Settings) -> LaunchPlan:
        """A preempted spot job's new plan says ``resume``: jobrun restores the mirror's files and passes the latest
        complete checkpoint as TRAINPOD_RESUME_DIR."""
        from trainpod.backends.runpod import _resume_hint

        if "job_spec" not in handle.extra:
            raise TrainpodError(f"run {handle.run_id}: its record has no job spec to relaunch from",
                                _resume_hint(handle))
        spec = JobRunSpec.model_validate(handle.extra["job_spec"]).model_copy(update={"resume": True})
        return self.plan(spec, settings)


def _secret_names(settings: Settings) -> list[str]:
    return secret_env_names(settings.secrets())


def _secret_values(plan: LaunchPlan, settings: Settings) -> dict[str, str]:
    return secret_env_values(plan.secret_env, settings.secrets())
