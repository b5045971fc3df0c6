"""RunPod plan and cost, pure: the pod request (v2 body or legacy GraphQL), the CUDA floor, the expected duration
and the estimate, pod names, and the markers a pod leaves in its output."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from typing import Any

from trainpod import credentials
from trainpod.backends.base import LaunchPlan, RunHandle
from trainpod.backends.runpod_api import CloudType, PodRequest
from trainpod.config.schema import TrainingConfig
from trainpod.contract import (
    DONE,
    POD_EXIT,
    POD_STUCK,
    STATUS_JSON,
    WORKSPACE,
    secret_env_values,
)
from trainpod.launchcmd import workload_command
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


def _resume_hint(handle: RunHandle) -> str:
    return f"resume it with `trainpod launch {handle.preset} --remote runpod --resume {handle.run_id}`"


def _run_id_of(name: str) -> str | None:
    body, sep, attempt = name[len(POD_NAME_PREFIX):].rpartition("-a")
    return body if sep and attempt.isdigit() and body else None


def read_markers(output: str, settings: Settings | None = None,
                 names: tuple[str, ...] = (DONE, POD_EXIT, STUCK_MARKER, STATUS_JSON)) -> dict[str, Any]:
    """The marker files ``names`` found in the run's output, parsed (DONE may be any bytes: ``{}``). By default
    a pod's: DONE, POD_EXIT, POD_STUCK and status.json."""
    from trainpod import storage

    found: dict[str, Any] = {}
    for name in names:
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
