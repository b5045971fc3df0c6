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

The backend's parts: :mod:`runpod_plan` (the pod request, CUDA floor, duration and cost), :mod:`runpod_rent`
(renting: stock, fallbacks, bounded start), :mod:`runpod_follow` (status, logs, release, cancel) and
:mod:`runpod_sweep` (pods and registry credentials that should not exist any more)."""

from __future__ import annotations

import math
import shlex
from typing import Any

from trainpod import credentials
from trainpod.backends.base import BackendBase, LaunchPlan, RunHandle
from trainpod.backends.runpod_api import CloudType, PodRequest
from trainpod.backends.runpod_follow import PodObserver
from trainpod.backends.runpod_plan import (
    CLOUD_TYPES,
    LEGACY_GRAPHQL,
    RUNPOD_CUDA_VERSIONS,
    VOLUME_MOUNT,
    _limits,
    _resume_hint,
    allowed_cuda_versions,
    expected_hours,
    pod_command,
    pod_name,
    pod_provider_request,
    pod_secret_env,
)
from trainpod.backends.runpod_rent import PodRental
from trainpod.backends.runpod_sweep import SweepItem, prune_registry_credentials, sweep
from trainpod.config.schema import TrainingConfig
from trainpod.contract import (
    ENV_RUN_SPEC,
    ENV_STOP_GRACE,
    POD_OUTPUT,
    PROJECT_TARGET,
    s3_env,
)
from trainpod.errors import ConfigError, UnsupportedError, available, did_you_mean
from trainpod.launchcmd import job_argv
from trainpod.settings import Settings
from trainpod.spec import CommandWorkload, RunSpec

# what callers import from here, wherever it is written
__all__ = ["RunPodBackend", "SweepItem", "allowed_cuda_versions", "expected_hours", "pod_name", "pod_secret_env",
           "prune_registry_credentials", "sweep"]


class RunPodBackend(PodRental, PodObserver, BackendBase):
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
