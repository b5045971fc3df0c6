"""The RunPod backend: a preset becomes one pod that trains, writes to S3, and terminates itself.

``plan`` is pure (no network): it refuses what cannot run *before* money is spent, and returns the
exact pod request (GPU type + fallbacks, cloud, CUDA floor, disk, env with secrets by name only),
an estimated cost with the source of its price, and the body ``submit`` will send (redacted), so
``--dry-run`` shows precisely what would be rented: an on-demand pod is a REST v2 ``POST /v2/pods``
``CreatePodRequest`` body (:mod:`trainpod.backends.runpod_v2`); a spot pod is the legacy GraphQL
``podRentInterruptable`` mutation (v2 has no spot pods; RunPod retires GraphQL in early 2027), with a
provider-side ``terminateAfter`` deadline. ``submit`` orders the GPU types by the catalog's stock for the
CUDA floor and refuses before renting when none is in stock.

Decisions:

* CPU hardware is refused. RunPod has CPU pods (``deployCpuPod``), but trainpod's RunPod value is
  GPU hours; CPU runs are cheaper and simpler on ``--remote docker``/``local``, and MPS exists only
  on Apple machines.
* Multi-node is refused here: one pod is one node. ``launch PRESET --remote runpod`` sends a multi-node preset
  to an Instant Cluster instead (:mod:`trainpod.backends.runpod_cluster`); custom jobs stay on one pod.
* Outputs must go to ``s3://``: a pod's disk vanishes with it, and the pod terminates itself.
* A run needs ``max_runtime_minutes`` or ``max_cost_usd`` (``--max-runtime``/``--max-cost``): the
  pod-side watchdog enforces them, so no failure mode can bill without bound.
* The pod is started with ``python -m trainpod.pod.supervisor -- python -m trainpod_trainer`` as its
  command (``dockerArgs``): the supervisor checks the DONE marker (RunPod restarts containers that
  exit), runs the watchdog and terminates the pod with the pod-scoped ``RUNPOD_API_KEY`` that RunPod
  injects, so teardown never depends on the laptop. The account key never enters the pod.
* Spot: the bid defaults to the on-demand price (never pay more than on-demand); the estimate uses
  it as an upper bound.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trainpod import credentials
from trainpod.backends.base import BackendBase, LaunchPlan, RunHandle, RunStatus
from trainpod.backends.runpod_api import CloudType, PodRequest
from trainpod.config.schema import TrainingConfig
from trainpod.contract import (
    DONE,
    ENV_RUN_SPEC,
    ENV_STOP_GRACE,
    EXIT_OK,
    POD_EXIT,
    POD_OUTPUT,
    POD_STUCK,
    PROJECT_TARGET,
    STATUS_JSON,
    WORKSPACE,
    s3_env,
    secret_env_values,
    state_after_exit,
)
from trainpod.errors import ConfigError, UnsupportedError, available, did_you_mean
from trainpod.launchcmd import job_argv, workload_command
from trainpod.settings import Settings
from trainpod.spec import CommandWorkload, RunSpec, TrainerWorkload

# CUDA versions RunPod hosts report, for the legacy GraphQL path only (it matches an exact list; REST v2 takes
# gpu.minCudaVersion, a floor). Hosts report up to 13.x (shared/runpod/README.md); re-check when RunPod adds one.
RUNPOD_CUDA_VERSIONS = ("11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.7", "12.8", "12.9",
                        "13.0")
LEGACY_GRAPHQL = ("legacy: RunPod's GraphQL API, retired in early 2027 (REST v2 has no spot pods); "
                  "terminateAfter = max runtime + stop grace + start-up allowance")
TERMINATE_AFTER_STARTUP_MIN = 10.0  # image pull + start before the watchdog's clock starts
CLOUD_TYPES: tuple[CloudType, ...] = ("ALL", "SECURE", "COMMUNITY")
POD_SUPERVISOR = ["python", "-m", "trainpod.pod.supervisor", "--"]


def pod_command(spec: RunSpec) -> tuple[list[str], dict[str, str]]:
    """The pod supervisor wrapping the workload's launch line (the trainer: python, or torchrun for several GPUs;
    a command: the job supervisor)."""
    argv, env = workload_command(spec)
    return [*POD_SUPERVISOR, *argv], env


POD_NAME_PREFIX = "trainpod-"
VOLUME_MOUNT = WORKSPACE
STUCK_MARKER = POD_STUCK  # left in the output by a pod that could not terminate itself (the pod supervisor)

ASSUMED_MFU = 0.3  # of the hardware table's peak_tflops (dense bf16 per GPU), for the duration heuristic only
STARTUP_HOURS = 10 / 60  # image pull + model download + dataset sync, before the first step


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split("."))


def allowed_cuda_versions(image_cuda: str) -> list[str]:
    """Every RunPod-offered CUDA version the image can run on (driver >= the image's CUDA)."""
    return [v for v in RUNPOD_CUDA_VERSIONS if _version(v) >= _version(image_cuda)]


def pod_name(run_id: str, attempt: int = 0) -> str:
    """Unique per launch attempt: the client adopts an existing pod of that name after a lost reply."""
    return f"{POD_NAME_PREFIX}{run_id}-a{attempt}"


def _model_params(base_model: str) -> float | None:
    """Parameters from a hub name like ``Qwen/Qwen2.5-Coder-1.5B`` (None when the name does not say)."""
    m = re.search(r"(\d+(?:\.\d+)?)\s*([BM])\b", base_model.split("/")[-1], re.IGNORECASE)
    if not m:
        return None
    return float(m.group(1)) * (1e9 if m.group(2).upper() == "B" else 1e6)


def expected_hours(work: TrainingConfig | CommandWorkload) -> tuple[float | None, str]:
    """How long the run is expected to take, and why we think so (a command's duration is its max_runtime)."""
    if work.max_runtime_minutes is not None:
        return work.max_runtime_minutes / 60, f"max_runtime_minutes={work.max_runtime_minutes:g} (upper bound)"
    if isinstance(work, CommandWorkload):
        return None, "unknown: a custom command's duration is bounded only by max_runtime_minutes / max_cost_usd"
    cfg = work
    steps = cfg.hyperparameters.max_steps
    params = _model_params(cfg.expert.base_model)
    peak = cfg.hardware.peak_tflops
    if steps and params and peak:
        tokens = steps * cfg.batch_size * cfg.gradient_accumulation * cfg.sequence_length * cfg.world_size
        flops_per_token = (4 if cfg.finetune == "lora" else 6) * params
        seconds = tokens * flops_per_token / (peak * 1e12 * ASSUMED_MFU * cfg.world_size)
        return STARTUP_HOURS + seconds / 3600, (
            f"heuristic: {steps} steps x {tokens // steps} tokens, {flops_per_token / params:g}N FLOPs/token, "
            f"{ASSUMED_MFU:.0%} MFU of {peak:g} TFLOPS, +{STARTUP_HOURS * 60:g} min startup"
        )
    return None, "unknown: no max_runtime_minutes, and no max_steps/model size to estimate from"


def _limits(spec: RunSpec) -> TrainingConfig | CommandWorkload:
    """What carries the run's limits, hardware and duration: the preset's config, or the job's command."""
    work = spec.workload
    return work.config if isinstance(work, TrainerWorkload) else work


class RunPodBackend(BackendBase):
    name = "runpod"
    pulls_images = True

    # ------------------------------------------------------------------ refusals
    def unsupported(self, spec: RunSpec, cpu_stand_in: bool = False) -> list[str]:
        """Why ``spec`` cannot run here. ``cpu_stand_in`` (settings.runpod_cpu_stand_in, tests only) lets a
        CPU profile that names a runpod_gpu_type_id through, so CI drives the pod chain without a GPU."""
        work = spec.workload
        hw, hw_name = work.hardware, work.hardware_name
        reasons = []
        if not hw.supported:
            reasons.append(f"hardware '{hw_name}' is not supported: {hw.unsupported_reason}")
        if hw.device == "mps":
            reasons.append(f"hardware '{hw_name}' is Apple MPS, which exists only on Apple machines, not on RunPod")
        elif hw.device == "cpu" and not (cpu_stand_in and hw.runpod_gpu_type_id):
            reasons.append(
                f"hardware '{hw_name}' is CPU-only, not a RunPod GPU profile (device=cuda, image=cuda, "
                "runpod_gpu_type_id): trainpod rents GPU pods on RunPod; run CPU work with --remote docker or "
                "--remote local"
            )
        elif not hw.runpod_gpu_type_id:
            reasons.append(f"hardware '{hw_name}' has no runpod_gpu_type_id (e.g. \"NVIDIA GeForce RTX 4090\")")
        if hw.image != "cuda" and hw.device == "cuda":
            reasons.append(f"hardware '{hw_name}' has image = '{hw.image}'; RunPod GPU pods need image = 'cuda'")
        data = spec.storage.dataset
        if isinstance(work, CommandWorkload):
            if not work.sync_uri:
                reasons.append("RunPod jobs must mirror their output to S3: set TRAINPOD_STORAGE_URI=s3://BUCKET/prefix")
            if data and not data.startswith("s3://"):
                reasons.append(f"jobs.{work.name}.data is a local path ({data}) the pod cannot read: push it with "
                               f"`trainpod data push {data} s3://BUCKET/datasets/{work.name}` and use that URI")
        elif not data.startswith("s3://"):
            name = work.config.dataset_name
            reasons.append(
                f"dataset '{name}' is a local path ({data}) the pod cannot read: "
                f"push it with `trainpod data push {data} s3://BUCKET/datasets/{name}` "
                f"and point [datasets.{name}].path (or a --config overlay) at that URI"
            )
        if spec.init_from and not spec.init_from.startswith("s3://"):
            reasons.append(
                f"init_from (the previous pipeline stage's output) is a local path ({spec.init_from}) the pod cannot "
                "read: run every stage of the pipeline with --remote runpod, whose outputs are on s3://"
            )
        if max(hw.nnodes, spec.launch.nnodes) > 1:
            reasons.append(
                f"multi-node training (nnodes={max(hw.nnodes, spec.launch.nnodes)}) does not fit one pod: "
                "`trainpod launch PRESET --remote runpod` runs a multi-node preset on a RunPod Instant Cluster; "
                "a custom job runs on one pod (use gpu_count)"
            )
        if work.max_runtime_minutes is None and work.max_cost_usd is None:
            reasons.append("a RunPod run needs a money guard: neither max_runtime_minutes nor max_cost_usd is set; "
                           "pass --max-runtime MINUTES and/or --max-cost USD (the pod's watchdog enforces them)")
        return reasons

    # ------------------------------------------------------------------ plan
    def plan(self, spec: RunSpec, settings: Settings | None = None) -> LaunchPlan:
        settings = self._use(settings)
        reasons = self.unsupported(spec, cpu_stand_in=settings.runpod_cpu_stand_in)
        if reasons:
            raise UnsupportedError(
                "cannot run on RunPod:\n  - " + "\n  - ".join(reasons),
                "pick a cloud-* hardware profile (trainpod list --hardware) or another --remote",
            )
        work, limits = spec.workload, _limits(spec)
        hw = work.hardware
        if not spec.storage.output.startswith("s3://"):
            raise UnsupportedError(
                f"RunPod runs must write to S3, but the output is '{spec.storage.output}'",
                "set TRAINPOD_STORAGE_URI=s3://BUCKET/prefix: checkpoints and the adapter go there as they "
                "are written, because the pod's disk vanishes when it terminates itself",
            )
        if isinstance(work, CommandWorkload) and not settings.registry:
            raise UnsupportedError("no registry RunPod can pull the project image from",
                                   "set TRAINPOD_REGISTRY; the project image is pushed next to the hardware image")
        if not spec.image:
            raise UnsupportedError(
                "no image for the RunPod pod: the RunSpec has no content-addressed image tag",
                "set TRAINPOD_REGISTRY to a registry RunPod can pull from; `trainpod build` + `trainpod push` "
                "produce the tag that launch puts in the RunSpec",
            )
        cloud = self._cloud_type(settings, hw.runpod_cloud_type)
        gpu_type = hw.runpod_gpu_type_id
        assert gpu_type is not None  # guaranteed by unsupported()
        # a CUDA image needs a driver at least as new as its CUDA (schema: cuda_version is set); the CPU
        # stand-in (tests only) runs on any host
        cuda = allowed_cuda_versions(hw.cuda_version) if hw.cuda_version else list(RUNPOD_CUDA_VERSIONS)
        if work.spot and not cuda:
            raise UnsupportedError(
                f"hardware '{work.hardware_name}' needs CUDA >= {hw.cuda_version}, newer than any CUDA version "
                f"trainpod knows RunPod to offer for spot pods ({RUNPOD_CUDA_VERSIONS[-1]})",
                "lower cuda_version in the hardware table, or add the new version to RUNPOD_CUDA_VERSIONS",
            )

        price, price_source = hw.price_per_gpu_hour, "profile price_per_gpu_hour (offline; submit re-checks with API prices)"
        hours, hours_source = expected_hours(limits)
        notes = [f"duration: {hours_source}"]
        estimate = self._estimate(limits, price, hours, notes)
        if price is None:
            price_source = "none: the hardware profile has no price_per_gpu_hour; submit takes it from the API"
        notes.insert(0, f"price: {price_source}")
        if work.spot:
            notes.append(f"CUDA floor {hw.cuda_version}: hosts with CUDA {', '.join(cuda)}")
        else:
            notes.append(f"CUDA floor {hw.cuda_version or 'none (CPU stand-in)'}: gpu.minCudaVersion; submit orders "
                         "the GPU types by the catalog's stock for it and refuses when none is in stock")

        inner, workdir = spec, VOLUME_MOUNT
        if isinstance(work, CommandWorkload):
            # the project layer holds the code; the pod's output is scratch mirrored to the run's S3 output
            workdir = PROJECT_TARGET
            inner = spec.model_copy(update={"workload": work.model_copy(update={"project_dir": PROJECT_TARGET}),
                                            "storage": spec.storage.model_copy(update={"output": POD_OUTPUT})})
            notes.insert(0, f"the pod runs {job_argv(spec)} in {PROJECT_TARGET} under the pod supervisor (DONE "
                            f"check, watchdog, self-terminate); outputs mirrored to {work.sync_uri}")
        command, launch_env = pod_command(inner)
        env = {**self._env(inner, settings), **launch_env}
        secret_names = credentials.pod_secret_names(spec, settings)
        notes.extend(f"WARNING: {w}" for w in credentials.warnings(spec, settings))
        request = PodRequest(
            name=pod_name(spec.run_id),
            image=spec.image,
            gpu_type_id=gpu_type,
            gpu_count=max(1, hw.gpu_count),
            cloud_type=cloud,
            container_disk_gb=hw.container_disk_gb,
            volume_gb=0,  # nothing lives on the pod: checkpoints stream to S3
            volume_mount_path=VOLUME_MOUNT,
            env={**env, **{n: "***" for n in secret_names}},
            docker_args=shlex.join(command),
            allowed_cuda_versions=cuda if work.spot else (),
            min_cuda_version=None if work.spot else hw.cuda_version,
            bid_per_gpu=price if work.spot else None,
        )
        if work.spot:
            notes.append("spot: bid = on-demand price (a cap); submit lowers it to the API's spot price; a preempted "
                         "pod is relaunched and resumes from its latest complete checkpoint")
            notes.append("spot pods use " + LEGACY_GRAPHQL)
        provider_request = {
            **pod_provider_request(request, secret_names, [gpu_type, *hw.runpod_fallback_gpu_type_ids]),
            "cloud_type": cloud,
            "gpu_type_id": gpu_type,
            "fallback_gpu_type_ids": list(hw.runpod_fallback_gpu_type_ids),
            "cuda_floor": hw.cuda_version,
            "spot": work.spot,
            "bid_per_gpu": request.bid_per_gpu,
            "price_per_gpu_hour": price,
            "price_source": price_source,
            "expected_hours": None if hours is None else round(hours, 4),
            "max_runtime_minutes": work.max_runtime_minutes,
            "max_cost_usd": work.max_cost_usd,
        }
        return LaunchPlan(
            backend=self.name,
            run_id=spec.run_id,
            image=spec.image,
            command=command,
            env=env,
            secret_env=secret_names,
            workdir=workdir,
            gpus=hw.gpu_count,
            provider_request=provider_request,
            estimated_cost_usd=estimate,
            notes=notes,
            credentials=credentials.describe(spec, settings),
            spec=spec,
        )

    @staticmethod
    def _cloud_type(settings: Settings, profile: str) -> CloudType:
        chosen = (settings.runpod_cloud_type or profile).upper()
        if chosen not in CLOUD_TYPES:
            raise ConfigError(
                f"TRAINPOD_RUNPOD_CLOUD_TYPE: unknown cloud type '{settings.runpod_cloud_type}'"
                f"{did_you_mean(chosen, CLOUD_TYPES)}",
                f"use one of {available(CLOUD_TYPES)}",
            )
        return chosen  # type: ignore[return-value]

    @staticmethod
    def _estimate(limits: TrainingConfig | CommandWorkload, price: float | None, hours: float | None,
                  notes: list[str]) -> float | None:
        """Price x GPUs x hours, checked against max_cost_usd (refuses when already over)."""
        gpus = max(1, limits.hardware.gpu_count)  # a pod has at least one GPU (the CPU stand-in too)
        if price is None:
            return None
        hourly = price * gpus
        if hours is None and limits.max_cost_usd is not None:
            hours = limits.max_cost_usd / hourly
            notes.append(f"duration capped by max_cost_usd: the watchdog stops after {hours:.2f} h")
        if hours is None:
            return None
        estimate = math.ceil(hourly * hours * 100) / 100
        notes.append(f"estimate: ${price:g}/GPU-h x {gpus} GPU x {hours:.2f} h = ${estimate:.2f}")
        if limits.max_cost_usd is not None and estimate > limits.max_cost_usd:
            bound = ""
            if limits.max_runtime_minutes is not None:
                bound = f"max_runtime would cost ${estimate:.2f}, over max_cost_usd ${limits.max_cost_usd:.2f}: "
            raise UnsupportedError(
                f"{bound}estimated cost ${estimate:.2f} exceeds max_cost_usd ${limits.max_cost_usd:.2f} "
                f"(${price:g}/GPU-h x {gpus} x {hours:.2f} h)",
                "raise --max-cost, lower --max-runtime, or pick cheaper hardware",
            )
        return estimate

    @staticmethod
    def _env(spec: RunSpec, settings: Settings) -> dict[str, str]:
        """Non-secret pod env: the hardware env, the RunSpec, S3 location settings."""
        env = dict(spec.workload.hardware.env)
        env.update({
            ENV_RUN_SPEC: spec.to_json(),
            ENV_STOP_GRACE: f"{spec.stop_grace_seconds:g}",
            "PYTHONUNBUFFERED": "1",
            **s3_env(settings, key_id=False),  # S3 credentials: trainpod.credentials (a run-scoped STS session)
        })
        return env

    # ------------------------------------------------------------------ submit
    def preflight(self, settings: Settings) -> None:
        """First thing a real launch checks (before S3, the image build or a pod): the API key is set."""
        if settings.runpod_api_key is None or not settings.runpod_api_key.get_secret_value():
            raise UnsupportedError(
                "--remote runpod needs a RunPod API key, and RUNPOD_API_KEY is not set",
                "export RUNPOD_API_KEY (RunPod console: Settings > API Keys); it is a secret, so never put it in "
                "training.toml or a profile file (--dry-run works without it)",
            )

    start_timeout_s = 600.0  # a pod that has not started by then is terminated; the next fallback is tried
    provision_timeout_s = 300.0  # a pod still PROVISIONING (no machine) by then is terminated, with its system log
    poll_s = 5.0

    def submit(self, plan: LaunchPlan, settings: Settings | None = None) -> RunHandle:
        """Rent the pod: live prices re-checked against max_cost, GPU types ordered by stock (refused when none is
        in stock), fallbacks on capacity, bounded start.

        The run is recorded as soon as a pod exists, so a CLI killed while waiting leaves a run that
        ``runs status``/``cancel``/``sweep`` can still find.
        """
        from trainpod.backends.runpod_v2 import V2Client

        settings = self._use(settings)
        return self._rent(plan, settings, V2Client.from_settings(settings), first_attempt=0, relaunches=0)

    max_relaunches = 3

    def relaunch(self, handle: RunHandle, settings: Settings | None = None) -> RunHandle | None:
        """Rent a new pod for a preempted spot run (bounded); the trainer in it resumes from the latest
        complete checkpoint in S3, so the total number of steps is unchanged."""
        from trainpod.backends.runpod_v2 import V2Client
        from trainpod.errors import TrainpodError

        settings = self._use(settings)
        count = int(handle.extra.get("relaunches", 0))
        api = V2Client.from_settings(settings)
        if handle.provider_id:
            api.terminate(handle.provider_id)  # whatever is left of the preempted pod, relaunched or not
        if count >= self.max_relaunches:
            raise TrainpodError(
                f"run {handle.run_id} was relaunched {count} times already; not renting another pod",
                _resume_hint(handle),
            )
        return self._rent(self._relaunch_plan(handle, settings), settings, api,
                          first_attempt=int(handle.extra.get("next_attempt", 1)), relaunches=count + 1,
                          previous=handle)

    def _estimate_at(self, plan: LaunchPlan, price: float) -> float | None:
        """The estimate at a live price (refused when over max_cost_usd)."""
        return self._estimate(_limits(plan.spec), price, plan.provider_request["expected_hours"], [])

    @staticmethod
    def _record(plan: LaunchPlan) -> dict[str, Any]:
        """The run's own extras in the run registry: its limits, the plan a relaunch rents from, the workload's."""
        work = plan.spec.workload
        return {"max_runtime_minutes": work.max_runtime_minutes, "max_cost_usd": work.max_cost_usd,
                "plan": plan.model_dump(mode="json"), **plan.spec.registry_extra()}

    def _relaunch_plan(self, handle: RunHandle, settings: Settings) -> LaunchPlan:
        """The recorded plan, re-planned with ``resume``: the trainer resumes from its latest complete checkpoint in
        S3; a command's supervisor restores the mirror's files and passes that checkpoint as TRAINPOD_RESUME_DIR."""
        from trainpod.errors import TrainpodError

        if "plan" not in handle.extra:
            raise TrainpodError(f"run {handle.run_id}: its record has no plan to relaunch from", _resume_hint(handle))
        spec = LaunchPlan.model_validate(handle.extra["plan"]).spec
        return self.plan(spec.model_copy(update={"resume": True}), settings)

    def _rent(self, plan: LaunchPlan, settings: Settings, api: Any, *, first_attempt: int,
              relaunches: int, previous: RunHandle | None = None) -> RunHandle:
        """Rent the first of ``provider_request["attempts"]`` (the profile's GPU type, then its fallbacks; on-demand:
        ordered by the catalog's stock, out-of-stock ones skipped) that is offered at an acceptable price, has
        capacity and starts; each try is a numbered pod name (``-aN``). On-demand pods go through REST v2
        (``api``), spot pods through the legacy GraphQL client. A relaunch (``previous``) keeps the run's
        creation time and what others recorded on it (pipeline stage)."""
        from trainpod.backends.runpod_api import CapacityError, ForbiddenError, GraphQLClient
        from trainpod.errors import TrainpodError
        from trainpod.redact import register_secret
        from trainpod.runs import RunRegistry
        from trainpod.spec import utcnow_iso

        spec, req = plan.spec, plan.provider_request
        spot = bool(req["spot"])
        renter = GraphQLClient.from_settings(settings) if spot else api
        registry = RunRegistry(settings.state_path)
        offered = {g.id: g for g in renter.gpu_types()}
        env = {**plan.env, **pod_secret_env(plan, settings)}  # mints the run's S3 session (each rent: renewal)
        for name in plan.secret_env:
            register_secret(env.get(name))
        tried: list[str] = []
        candidates = list(req["attempts"]) if spot else self._by_stock(api, req, tried)
        auth_id = self._registry_auth(api, settings)
        last_detail = ""
        for attempt, choice in enumerate(candidates, start=first_attempt):
            gpu, cloud = choice["gpu_type_id"], choice["cloud_type"]
            info = offered.get(gpu)
            price = info.price(cloud, spot=spot) if info else None
            if price is None:
                tried.append(f"{gpu} ({cloud}): not offered by RunPod now")
                continue
            cap = req.get("bid_per_gpu")
            if spot and cap is not None and price > cap:
                tried.append(f"{gpu} ({cloud}): spot price ${price:g} is above the ${cap:g} cap")
                continue
            estimate = self._estimate_at(plan, price)
            pod_request = _pod_request(req, name=pod_name(spec.run_id, attempt), gpu_type_id=gpu,
                                       cloud_type=cloud, env=env, auth_id=auth_id,
                                       bid=price if spot else None,
                                       deadline=self._terminate_after(plan, price) if spot else None)
            try:
                pod = renter.deploy(pod_request)
            except (CapacityError, ForbiddenError) as exc:
                last_detail = exc.message
                tried.append(f"{gpu} ({cloud}): {'no capacity' if spot else exc.message}")
                continue
            own = self._record(plan)
            handle = RunHandle(
                run_id=spec.run_id, backend=self.name, preset=spec.workload.name, provider_id=pod.id,
                output=spec.storage.output, created=previous.created if previous else utcnow_iso(),
                extra={**(previous.extra if previous else {}), "pod_name": pod_request.name, "gpu_type_id": gpu,
                       "cloud_type": cloud, "spot": spot, "api": "graphql" if spot else "rest-v2",
                       "price_per_gpu_hour": price,
                       "price_source": "RunPod API gpuTypes" if spot else "RunPod REST v2 /v2/catalog/gpus",
                       "cost_per_hr": pod.cost_per_hr, "estimated_cost_usd": estimate, "started": None,
                       "relaunches": relaunches, "next_attempt": attempt + 1,
                       "stop_grace_seconds": spec.stop_grace_seconds, **own},
            )
            if pod_request.terminate_after:
                handle.extra["terminate_after"] = pod_request.terminate_after
            registry.save(handle)
            failure = self._wait_started(api, pod.id)
            if failure is None:
                started = api.pod(pod.id)
                if started is not None and started.cost_per_hr:
                    handle = registry.update(spec.run_id, cost_per_hr=started.cost_per_hr)
                return registry.update(spec.run_id, started=utcnow_iso())
            reason, fatal = failure
            api.terminate(pod.id)
            registry.update(spec.run_id, cancelled=True)
            if fatal:
                raise TrainpodError(
                    f"pod {pod.id} ({gpu}, {cloud}) failed while starting and was terminated: {reason}",
                    "check that RunPod can pull the image (TRAINPOD_REGISTRY, TRAINPOD_REGISTRY_USERNAME/"
                    "PASSWORD; a changed password needs `trainpod runs sweep --yes` to drop the old credential)",
                )
            tried.append(f"{gpu} ({cloud}): pod {pod.id} {reason} (terminated)")
        hint = ("add runpod_fallback_gpu_type_ids to the hardware table, set TRAINPOD_RUNPOD_CLOUD_TYPE=ALL, "
                "or retry later")
        if last_detail and all("no longer" not in t for t in tried):
            hint += f"; if every GPU type was refused the same way the request itself may break a rule: {last_detail}"
        raise CapacityError("no RunPod pod could be started:\n  - " + "\n  - ".join(tried), hint)

    def _terminate_after(self, plan: LaunchPlan, price: float) -> str | None:
        """GraphQL's provider-side deadline: max runtime (or what max_cost buys at ``price``) + stop grace +
        start-up allowance, from now."""
        req = plan.provider_request
        minutes = req.get("max_runtime_minutes")
        gpus = max(1, plan.gpus or 1)
        if minutes is None and req.get("max_cost_usd") is not None and price:
            minutes = float(req["max_cost_usd"]) / (price * gpus) * 60
        if minutes is None:
            return None
        return terminate_after(float(minutes) + plan.spec.stop_grace_seconds / 60 + TERMINATE_AFTER_STARTUP_MIN)

    def _by_stock(self, api: Any, req: dict[str, Any], tried: list[str]) -> list[dict[str, str]]:
        """The attempts ordered by the catalog's pod stock for the CUDA floor (HIGH first, then the profile's order);
        those out of stock are left out. Refuses before renting when none is in stock, naming what was checked."""
        from trainpod.backends.runpod_api import CapacityError, RunPodAPIError
        from trainpod.backends.runpod_v2 import STOCK_RANK

        attempts = list(req["attempts"])
        count = int(req["body"]["gpu"].get("count", 1))
        floor = req.get("min_cuda_version")
        stock = {}
        try:
            for cloud in dict.fromkeys(a["cloud_type"] for a in attempts):
                gpus = [a["gpu_type_id"] for a in attempts if a["cloud_type"] == cloud]
                for s in api.stock(gpus, cloud, count, floor):
                    stock[(s.gpu_type_id, cloud)] = s
        except RunPodAPIError as exc:  # the catalog is an ordering aid, not a reservation: rent in profile order
            tried.append(f"stock unknown ({exc.message}); trying in the profile's order")
            return attempts
        ranked = [(i, a) for i, a in enumerate(attempts) if stock[(a["gpu_type_id"], a["cloud_type"])].in_stock]
        if not ranked:
            checked = "; ".join(
                f"{a['gpu_type_id']} ({a['cloud_type']}): {stock[(a['gpu_type_id'], a['cloud_type'])].availability}"
                + ("" if stock[(a["gpu_type_id"], a["cloud_type"])].cuda_available or
                   stock[(a["gpu_type_id"], a["cloud_type"])].availability in ("NONE", "UNLISTED")
                   else f", none free with CUDA >= {floor}")
                for a in attempts)
            raise CapacityError(
                f"nothing to rent: no GPU type is in stock on RunPod for {count} GPU(s)"
                f"{f' with CUDA >= {floor}' if floor else ''} (checked {checked}); no pod was created",
                "retry later, add runpod_fallback_gpu_type_ids to the hardware table, or set "
                "TRAINPOD_RUNPOD_CLOUD_TYPE=ALL",
            )
        ranked.sort(key=lambda ia: (-STOCK_RANK[stock[(ia[1]["gpu_type_id"], ia[1]["cloud_type"])].availability], ia[0]))
        for a in attempts:
            s = stock[(a["gpu_type_id"], a["cloud_type"])]
            if not s.in_stock:
                tried.append(f"{a['gpu_type_id']} ({a['cloud_type']}): out of stock ({s.availability}"
                             f"{f', CUDA >= {floor}' if floor else ''}); not tried")
        return [a for _i, a in ranked]

    def _wait_started(self, api: Any, pod_id: str) -> tuple[str, bool] | None:
        """None once the pod runs; else (why, fatal). ERROR (e.g. the image pull failed) is fatal: every other GPU
        type would fail the same way. PROVISIONING past ``provision_timeout_s`` (no machine) and not started by
        ``start_timeout_s`` are not. The reason carries the pod's system log."""
        begun = time.monotonic()
        while True:
            pod = api.pod(pod_id)
            now = time.monotonic()
            if pod is not None and pod.desired_status == "RUNNING" and pod.started:
                return None
            if pod is None or pod.desired_status in ("EXITED", "TERMINATED"):
                return "ended before it started", False
            if pod.failed:
                return "is in ERROR" + self._system_log(api, pod_id, stop_first=False), True
            if pod.desired_status == "PROVISIONING" and now - begun >= self.provision_timeout_s:
                return (f"was still PROVISIONING after {self.provision_timeout_s:g}s (no machine)"
                        + self._system_log(api, pod_id)), False
            if now - begun >= self.start_timeout_s:
                return f"did not start within {self.start_timeout_s:g}s" + self._system_log(api, pod_id), False
            time.sleep(min(self.poll_s, max(0.0, self.start_timeout_s - (now - begun))))

    @staticmethod
    def _system_log(api: Any, pod_id: str, stop_first: bool = True, lines: int = 20) -> str:
        """The pod's recent system log (image pull, start errors) as an indented block; '' when unavailable.
        A pod still starting is stopped first, so the log stream ends after its backlog."""
        from trainpod.backends.runpod_api import RunPodAPIError

        try:
            if stop_first:
                api.stop(pod_id)
            events = list(api.logs(pod_id, source="system", tail=lines, timeout_s=5.0))
        except (RunPodAPIError, AttributeError):
            return ""
        if not events:
            return ""
        return "; its system log:\n      " + "\n      ".join(e.line for e in events[-lines:])

    @staticmethod
    def _registry_auth(api: Any, settings: Settings) -> str | None:
        """Registry credentials for a private image, stored at RunPod (None for a public image): the pull-only
        token (TRAINPOD_REGISTRY_PULL_*) when configured, else the push login (the plan warns). One credential per
        registry + user, reused by its stable name (never one per launch)."""
        auth = credentials.registry_secret(settings)
        if auth is None:
            return None
        user, password = auth
        return api.save_registry_auth(registry_credential_name(settings) or "", user, password)

    # ------------------------------------------------------------------ observe
    def status(self, handle: RunHandle) -> RunStatus:
        from trainpod.backends.runpod_api import RunPodAPIError
        from trainpod.backends.runpod_v2 import V2Client

        api = V2Client.from_settings(self.settings)
        pod = api.pod(handle.provider_id) if handle.provider_id else None
        markers = _read_markers(handle.output, self.settings)
        progress = markers.get(STATUS_JSON) or {}
        elapsed = pod.uptime_seconds if pod is not None and pod.started else None
        cost = None
        if elapsed is not None and pod is not None and pod.cost_per_hr:
            cost = round(pod.cost_per_hr * elapsed / 3600, 4)
        billed = None
        if handle.provider_id:
            try:  # what RunPod actually billed (all of this run's pod), next to the estimate
                billed = api.pod_cost(handle.provider_id, since=handle.created)
            except RunPodAPIError:
                billed = None
        common: dict[str, Any] = {"step": progress.get("step"), "loss": progress.get("loss"), "elapsed_s": elapsed,
                                  "cost_usd": cost, "billed_usd": billed,
                                  "estimated_cost_usd": handle.extra.get("estimated_cost_usd")}
        exit_info = markers.get(POD_EXIT)
        if exit_info and exit_info.get("pod_id") not in (None, handle.provider_id):
            exit_info = None  # left by an earlier pod of this run (before a relaunch)
        if DONE in markers:  # finished: how long it trained (its status.json), not the pod's uptime
            common["elapsed_s"] = progress.get("elapsed_s", elapsed)
            return RunStatus(state="succeeded", detail="DONE marker written", exit_code=0, **common)
        if exit_info:
            code = int(exit_info.get("exit_code", 1))
            reason = str(exit_info.get("reason", ""))
            # Resumable: RunPod stopped a reclaimed spot pod with SIGTERM, or the pod stopped with a checkpoint
            # before its S3 session expired (a relaunch renews it). A stop by the pod's watchdog means the budget
            # ended, which a relaunch must not renew.
            reclaimed = bool(handle.extra.get("spot")) and reason.startswith("received SIG")
            state = state_after_exit(code, done=code == EXIT_OK, cancelled=bool(handle.extra.get("cancelled")),
                                     resumable=reclaimed or credentials.EXPIRY_REASON in reason)
            return RunStatus(state=state, detail=reason, exit_code=0 if state == "succeeded" else code, **common)
        if pod is None or pod.desired_status == "TERMINATED":
            if handle.extra.get("cancelled"):
                return RunStatus(state="cancelled", detail="pod terminated by `runs cancel`", **common)
            # Gone without DONE or POD_EXIT: the run is over and did not succeed (the pod died, or was
            # reaped by `runs sweep` after exiting); "unknown" would leave it looking resumable forever.
            state = "preempted" if handle.extra.get("spot") else "failed"
            return RunStatus(state=state, detail="the pod is gone and left no result in the output", **common)
        if pod.failed:
            return RunStatus(state="failed", detail=f"pod {pod.id} is in ERROR (`trainpod runs logs` shows its "
                                                    "system log)", **common)
        if pod.desired_status == "EXITED":
            state = "preempted" if handle.extra.get("spot") else "failed"
            return RunStatus(state=state, detail=f"pod {pod.id} exited ({pod.last_status_change})", **common)
        if not pod.started:
            return RunStatus(state="pending", detail=f"pod {pod.id} is {pod.desired_status.lower()}", **common)
        return RunStatus(state="running", detail=f"pod {pod.id} on {handle.extra.get('gpu_type_id')}", **common)

    def logs(self, handle: RunHandle, follow: bool = False) -> Iterator[str]:
        """``follow``: the pod's own output, live (REST v2 server-sent events: the container's lines, and RunPod's
        system lines — image pull, start errors — prefixed ``[runpod]``), resumed with Last-Event-ID when the
        stream breaks, until the run reaches a final state; the S3 log when the pod's log is unavailable.
        Without ``follow``: ``logs/train.log``, which the trainer uploads to the output periodically."""
        from trainpod.backends.runpod_api import RunPodAPIError

        if follow and handle.provider_id:
            try:
                yield from self._follow_pod(handle)
                return
            except RunPodAPIError as exc:
                yield f"[trainpod] the pod's live log is unavailable ({exc.message}); following the S3 log"
        yield from self._s3_log(handle, follow)

    log_tail = 1000  # lines of backlog a follower starts with
    recheck_s = 30.0  # a follower checks the run's state and limits at least this often while the log streams

    def _follow_pod(self, handle: RunHandle) -> Iterator[str]:
        from trainpod.backends.base import TERMINAL_STATES
        from trainpod.backends.runpod_api import PodNotFoundError
        from trainpod.backends.runpod_v2 import V2Client

        api = V2Client.from_settings(self.settings)
        cursor: str | None = None
        assert handle.provider_id is not None
        while True:
            checked = time.monotonic()
            stream = api.logs(handle.provider_id, tail=self.log_tail, last_event_id=cursor,
                              timeout_s=max(60.0, 4 * self.poll_s))
            try:
                for event in stream:
                    cursor = event.id or cursor
                    yield event.line if event.source == "container" else f"[runpod] {event.line}"
                    if time.monotonic() - checked >= self.recheck_s:
                        break  # a stream that never ends must not starve the backstop: check, then resume
            except PodNotFoundError:
                if cursor is None:
                    raise  # never saw the pod's log: the S3 log has the run's output
            finally:
                stream.close()
            status = self.status(handle)
            if status.state in TERMINAL_STATES + ("unknown", "preempted"):
                return
            over = self.over_limit(handle, status)
            if over is not None:
                yield f"[trainpod] {over}: the pod's watchdog has not stopped it; terminating pod {handle.provider_id}"
                self.cancel(handle)
                continue
            time.sleep(min(self.poll_s, 1.0))

    def _s3_log(self, handle: RunHandle, follow: bool) -> Iterator[str]:
        from trainpod import storage
        from trainpod.contract import TERMINAL_STATES

        uri = handle.output.rstrip("/") + "/logs/train.log"
        seen = 0
        while True:
            data = storage.read_bytes(uri, self.settings) or b""
            if len(data) > seen:
                text = data[seen:].decode("utf-8", errors="replace")
                complete, _, _rest = text.rpartition("\n")
                if complete:
                    seen += len((complete + "\n").encode("utf-8"))
                    yield from complete.split("\n")
            if not follow:
                return
            status = self.status(handle)
            if status.state in TERMINAL_STATES + ("unknown", "preempted"):
                tail = (storage.read_bytes(uri, self.settings) or b"")[seen:].decode("utf-8", errors="replace")
                yield from (line for line in tail.split("\n") if line)
                return
            over = self.over_limit(handle, status)
            if over is not None:
                yield f"[trainpod] {over}: the pod's watchdog has not stopped it; terminating pod {handle.provider_id}"
                self.cancel(handle)
                continue
            time.sleep(self.poll_s)

    release_timeout_s = 60.0  # how long a pod may take to terminate itself after its run ended

    def release(self, handle: RunHandle, status: RunStatus, settings: Settings | None = None) -> Iterator[str]:
        """The last step of following a run: make sure the pod stopped billing.

        The pod terminates itself once its trainer exits (podside), a few seconds after DONE or POD_EXIT
        appear in S3. This waits for that (up to ``release_timeout_s``) so the CLI never reports a run as
        over while its pod still runs; a pod still there after that (self-terminate failed, pod left
        EXITED) is terminated from here, and the line says so."""
        from trainpod.backends.runpod_v2 import V2Client
        from trainpod.errors import TrainpodError

        if not handle.provider_id:
            return
        api = V2Client.from_settings(self._use(settings))
        deadline = time.monotonic() + self.release_timeout_s
        try:
            while True:
                pod = api.pod(handle.provider_id)
                if pod is None or pod.desired_status == "TERMINATED":
                    return
                if pod.desired_status != "RUNNING" or time.monotonic() >= deadline:
                    break
                time.sleep(min(1.0, self.poll_s))
            yield (f"[trainpod] run {handle.run_id} is {status.state} but pod {handle.provider_id} is still "
                   f"{pod.desired_status}; terminating it")
            api.terminate(handle.provider_id)
        except TrainpodError as exc:
            yield (f"[trainpod] could not confirm that pod {handle.provider_id} ended: {exc.message}; "
                   "check with `trainpod runs sweep`")

    def over_limit(self, handle: RunHandle, status: RunStatus) -> str | None:
        """The CLI's backstop for the pod's watchdog: a limit passed by more than the stop grace period
        (plus two polls) means the watchdog did not act (hung supervisor, wrong price), so the CLI
        that follows the run terminates the pod itself."""
        slack = float(handle.extra.get("stop_grace_seconds") or 60.0) + 2 * self.poll_s
        minutes, usd = handle.extra.get("max_runtime_minutes"), handle.extra.get("max_cost_usd")
        if minutes is not None and status.elapsed_s is not None and status.elapsed_s > minutes * 60 + slack:
            return f"max_runtime_minutes={minutes:g} passed ({status.elapsed_s:.0f}s running)"
        per_hr = handle.extra.get("cost_per_hr") or 0.0
        if usd is not None and status.cost_usd is not None and status.cost_usd > usd + per_hr * slack / 3600:
            return f"max_cost_usd={usd:g} passed (${status.cost_usd:.4f} so far)"
        return None

    def cancel(self, handle: RunHandle) -> None:
        """Terminate the pod (the trainer gets SIGTERM and checkpoints). Idempotent."""
        from trainpod.backends.runpod_v2 import V2Client
        from trainpod.runs import RunRegistry

        settings = self.settings
        if handle.provider_id:
            V2Client.from_settings(settings).terminate(handle.provider_id)
        handle.extra["cancelled"] = True
        registry = RunRegistry(settings.state_path)
        if handle.run_id in registry.ids():
            registry.update(handle.run_id, cancelled=True)


# ---------------------------------------------------------------------------------------- sweep
@dataclass(frozen=True)
class SweepItem:
    pod_id: str
    pod_name: str
    run_id: str | None
    verdict: str  # done | unknown | over-limit | keep
    reason: str
    terminated: bool = False


def sweep(settings: Settings, terminate: bool = False, api: Any = None, *,
          include_unknown: bool = False) -> list[SweepItem]:
    """trainpod's pods that should not be billing: run done, run unknown here, or over its limits.

    Only pods named ``trainpod-…`` are considered; with ``terminate`` the flagged ones are terminated.
    A pod this machine has no record of may be a teammate's live run: its output is looked up under
    ``TRAINPOD_STORAGE_URI/runs/RUN_ID`` (done there = safe to terminate), and otherwise it is only
    terminated with ``include_unknown``.
    """
    from trainpod.backends.runpod_v2 import V2Client
    from trainpod.errors import TrainpodError
    from trainpod.runs import RunRegistry

    api = api or V2Client.from_settings(settings)
    registry = RunRegistry(settings.state_path)
    known = set(registry.ids())
    items = []
    for pod in api.pods(name_prefix=POD_NAME_PREFIX):
        if not pod.name.startswith(POD_NAME_PREFIX) or pod.desired_status == "TERMINATED":
            continue
        run_id = _run_id_of(pod.name)
        if run_id is None or run_id not in known:
            verdict, reason = "unknown", "no run of this name in the local run registry"
            if run_id and settings.storage_uri:
                try:
                    markers = _read_markers(f"{settings.storage_uri.rstrip('/')}/runs/{run_id}", settings)
                except TrainpodError:
                    markers = {}
                if _stuck(markers, pod.id):
                    verdict, reason = "done", _stuck(markers, pod.id)
                elif DONE in markers or POD_EXIT in markers:
                    verdict, reason = "done", "the run has ended (DONE/POD_EXIT under TRAINPOD_STORAGE_URI)"
        else:
            handle = registry.get(run_id)
            try:
                markers = _read_markers(handle.output, settings)
            except TrainpodError:
                markers = {}  # unreadable output: judge by the limits alone
            hours = (pod.uptime_seconds or 0) / 3600
            max_rt, max_cost = handle.extra.get("max_runtime_minutes"), handle.extra.get("max_cost_usd")
            if _stuck(markers, pod.id):
                verdict, reason = "done", _stuck(markers, pod.id)
            elif DONE in markers or POD_EXIT in markers:
                verdict, reason = "done", "the run has ended (DONE/POD_EXIT in its output)"
            elif max_rt is not None and hours * 60 > float(max_rt):
                verdict, reason = "over-limit", f"up {hours * 60:.0f} min > max_runtime_minutes {max_rt:g}"
            elif max_cost is not None and pod.cost_per_hr and pod.cost_per_hr * hours > float(max_cost):
                verdict, reason = "over-limit", f"cost ${pod.cost_per_hr * hours:.2f} > max_cost_usd {max_cost:g}"
            elif pod.desired_status in ("EXITED", "ERROR"):
                verdict, reason = "done", f"the pod has {'exited' if pod.desired_status == 'EXITED' else 'failed (ERROR)'}"
            else:
                verdict, reason = "keep", "running within its limits"
        done = False
        if terminate and (verdict in ("done", "over-limit") or (verdict == "unknown" and include_unknown)):
            api.terminate(pod.id)
            done = True
        items.append(SweepItem(pod.id, pod.name, run_id, verdict, reason, done))
    return items


def pod_secret_env(plan: LaunchPlan, settings: Settings) -> dict[str, str]:
    """The secret env values of ``plan``'s pod, at the last moment: a freshly minted run-scoped S3 session
    (trainpod.credentials; the user's own keys only with --allow-long-lived-credentials), and the other
    secrets the plan names (HF_TOKEN only for a gated base model)."""
    env = credentials.pod_s3_env(plan.spec, settings)
    for name, value in secret_env_values(plan.secret_env, settings.secrets()).items():
        env.setdefault(name, value)  # never the user's own S3 keys over the session's
    return env


def _stuck(markers: dict[str, Any], pod_id: str) -> str:
    """The reason from the pod's own POD_STUCK marker (it could not terminate itself), or ''."""
    info = markers.get(STUCK_MARKER)
    if not isinstance(info, dict) or info.get("pod_id") != pod_id:
        return ""
    how = "stopped (no GPU billing)" if info.get("stopped") else "still running"
    return f"the pod could not terminate itself and is {how}: {info.get('errors', '')}"[:300]


def registry_credential_name(settings: Settings) -> str | None:
    """The one RunPod registry credential trainpod keeps per registry + user (a stable name, never per launch)."""
    auth = credentials.registry_secret(settings)
    if auth is None:
        return None
    return f"{POD_NAME_PREFIX}{settings.registry or 'registry'}-{auth[0]}"


def prune_registry_credentials(settings: Settings, delete: bool = False, api: Any = None) -> list[tuple[str, str]]:
    """trainpod's registry credentials at RunPod (``trainpod-…``) that no pod uses and that are not the current
    registry + user's: [(name, what happened)]. With ``delete`` they are deleted (RunPod refuses while a pod
    pulls with one: it is kept)."""
    from trainpod.backends.runpod_v2 import V2Client

    api = api or V2Client.from_settings(settings)
    in_use = {p.registry_id for p in api.pods() if p.registry_id}
    current = registry_credential_name(settings)
    out = []
    for reg in api.registries():
        if not reg.name.startswith(POD_NAME_PREFIX) or reg.name == current or reg.id in in_use:
            continue
        if not delete:
            out.append((reg.name, "unused"))
        else:
            out.append((reg.name, "deleted" if api.delete_registry(reg.id) else "kept: a pod still uses it"))
    return out


def _resume_hint(handle: RunHandle) -> str:
    return f"resume it with `trainpod launch {handle.preset} --remote runpod --resume {handle.run_id}`"


def _run_id_of(name: str) -> str | None:
    body, sep, attempt = name[len(POD_NAME_PREFIX):].rpartition("-a")
    return body if sep and attempt.isdigit() and body else None


def _read_markers(output: str, settings: Settings) -> dict[str, Any]:
    """DONE, POD_EXIT and status.json from the run's output (parsed; DONE may be any bytes)."""
    from trainpod import storage

    found: dict[str, Any] = {}
    for name in (DONE, POD_EXIT, STUCK_MARKER, STATUS_JSON):
        raw = storage.read_bytes(output.rstrip("/") + "/" + name, settings)
        if raw is None:
            continue
        try:
            found[name] = json.loads(raw)
        except ValueError:
            found[name] = {}
    return found


def _pod_request(req: dict[str, Any], *, name: str, gpu_type_id: str, cloud_type: CloudType,
                 env: dict[str, str], auth_id: str | None, bid: float | None,
                 deadline: str | None = None) -> PodRequest:
    """The plan's displayed request turned back into a request, with the attempt's choices and real env."""
    if "body" in req:  # REST v2
        body = req["body"]
        return PodRequest(
            name=name, image=body["image"], gpu_type_id=gpu_type_id, gpu_count=body["gpu"].get("count", 1),
            cloud_type=cloud_type, container_disk_gb=body.get("disk", 30), env=env, docker_args=body.get("args", ""),
            min_cuda_version=body["gpu"].get("minCudaVersion"), container_registry_auth_id=auth_id,
        )
    inp = req["input"]
    return PodRequest(
        name=name, image=inp["imageName"], gpu_type_id=gpu_type_id, gpu_count=inp["gpuCount"],
        cloud_type=cloud_type, container_disk_gb=inp["containerDiskInGb"], volume_gb=inp["volumeInGb"],
        volume_mount_path=inp["volumeMountPath"], ports=inp["ports"], env=env, docker_args=inp["dockerArgs"],
        allowed_cuda_versions=tuple(inp.get("allowedCudaVersions") or ()), container_registry_auth_id=auth_id,
        bid_per_gpu=bid, terminate_after=deadline,
    )


def _display_input(data: dict[str, Any]) -> dict[str, Any]:
    """The deploy input as JSON data (enum values as their names)."""
    out = {}
    for k, v in data.items():
        out[k] = getattr(v, "value", v)
    return out


def pod_provider_request(request: PodRequest, secret_names: list[str], gpu_type_ids: list[str]) -> dict[str, Any]:
    """What ``--dry-run`` shows of the provider request and ``submit`` rents from (secrets as ``***``).

    On-demand: the REST v2 ``CreatePodRequest`` body, one attempt per GPU type and cloud (v2 has no ``ALL``
    cloud: it becomes COMMUNITY, then SECURE). Spot: the legacy GraphQL mutation (``terminateAfter`` is set at
    submit, from the submit time)."""
    clouds = ["COMMUNITY", "SECURE"] if request.cloud_type == "ALL" and not request.spot else [request.cloud_type]
    attempts = [{"gpu_type_id": g, "cloud_type": c} for g in gpu_type_ids for c in clouds]
    hidden = set(secret_names)
    if request.spot:
        return {"api": "graphql", "legacy": LEGACY_GRAPHQL, "mutation": request.mutation,
                "input": _display_input(request.graphql_input()), "graphql": request.document(secret_names),
                "allowed_cuda_versions": list(request.allowed_cuda_versions), "attempts": attempts}
    shown = dataclasses.replace(request, cloud_type=clouds[0],
                                env={k: ("***" if k in hidden else v) for k, v in request.env.items()})
    return {"api": "rest-v2", "endpoint": "POST /v2/pods", "schema": "CreatePodRequest", "body": shown.v2_body(),
            "min_cuda_version": request.min_cuda_version, "attempts": attempts}


def terminate_after(minutes: float, now: float | None = None) -> str:
    """GraphQL ``terminateAfter``: an ISO 8601 UTC instant ``minutes`` from now."""
    t = (time.time() if now is None else now) + minutes * 60
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(t)))
