"""A loopback fake of RunPod's APIs, REST v2 and (legacy) GraphQL, for tests at the HTTP boundary.

REST v2 (``/v2/...``, :mod:`tests.fakes.runpod_v2`) is held to RunPod's published OpenAPI document (the
vendored subset in ``tests/contract``): every request is validated (an invalid one is answered 422 with the
violations, as RunPod does, and recorded in ``violations``) and every response the fake sends is validated
against the document with every object closed (a violation is recorded and answered 500), so the fake cannot
drift from the contract. The fixtures fail a test that leaves a violation behind.

It is a real HTTP server on 127.0.0.1 that parses and validates every document with graphql-core
against a subset of RunPod's schema (field and input names from the runpod SDK, SkyPilot's spot
mutation and docs.runpod.io), so a malformed or injected document is rejected the way a GraphQL
server rejects it, and variables work as in any GraphQL server. It keeps pods in memory, requires
an API key (``Authorization: Bearer KEY`` as the SDK sends it, or ``?api_key=``), and hands each
pod to a pluggable :class:`PodRunner` that makes the pod's container really run (a local process, or
a container on the local Docker engine with host networking).

Fault injection (per test): HTTP 5xx pages, dropped connections, slow answers, lost responses
(the mutation is applied but the answer never arrives), capacity errors, pods that never start,
and pods killed mid-run (spot preemption).

Behaviours that are assumptions about the real service, not taken from the SDK or docs: the exact
error texts, that an unknown pod id reads as ``null`` and terminating it errors with "not found",
and that a preempted spot pod reads as ``EXITED`` with no runtime.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from graphql import GraphQLError, build_schema, graphql_sync, parse
from graphql.language import OperationDefinitionNode

CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)

SCHEMA = build_schema(
    """
    enum CloudTypeEnum { ALL SECURE COMMUNITY }
    enum PodStatus { CREATED RUNNING RESTARTING EXITED PAUSED DEAD TERMINATED }

    input EnvironmentVariableInput { key: String!  value: String! }
    input PodFindAndDeployOnDemandInput {
      name: String  imageName: String  gpuTypeId: String  gpuCount: Int  cloudType: CloudTypeEnum
      containerDiskInGb: Int  volumeInGb: Int  volumeMountPath: String  ports: String  dockerArgs: String
      startSsh: Boolean  startJupyter: Boolean  supportPublicIp: Boolean  env: [EnvironmentVariableInput]
      allowedCudaVersions: [String]  containerRegistryAuthId: String  minVcpuCount: Int  minMemoryInGb: Int
      dataCenterId: String  countryCode: String  templateId: String  networkVolumeId: String
      minDownload: Int  minUpload: Int  terminateAfter: String  stopAfter: String
    }
    input PodRentInterruptableInput {
      bidPerGpu: Float!
      name: String  imageName: String  gpuTypeId: String  gpuCount: Int  cloudType: CloudTypeEnum
      containerDiskInGb: Int  volumeInGb: Int  volumeMountPath: String  ports: String  dockerArgs: String
      startSsh: Boolean  startJupyter: Boolean  supportPublicIp: Boolean  env: [EnvironmentVariableInput]
      allowedCudaVersions: [String]  containerRegistryAuthId: String  minVcpuCount: Int  minMemoryInGb: Int
      dataCenterId: String  countryCode: String  templateId: String  networkVolumeId: String
      minDownload: Int  minUpload: Int  cudaVersion: String  terminateAfter: String  stopAfter: String
    }
    input PodFilter { podId: String! }
    input PodStopInput { podId: String! }
    input PodTerminateInput { podId: String! }
    input PodResumeInput { podId: String!  gpuCount: Int }
    input SaveRegistryAuthInput { name: String!  username: String!  password: String! }
    input GpuTypeFilter { id: String }
    input GpuLowestPriceInput { gpuCount: Int }

    type LowestPrice { minimumBidPrice: Float  uninterruptablePrice: Float }
    type GpuType {
      id: String!  displayName: String  memoryInGb: Int  maxGpuCount: Int  manufacturer: String
      secureCloud: Boolean  communityCloud: Boolean  securePrice: Float  communityPrice: Float
      secureSpotPrice: Float  communitySpotPrice: Float  lowestPrice(input: GpuLowestPriceInput): LowestPrice
    }
    type PodRuntimePort { ip: String  isIpPublic: Boolean  privatePort: Int  publicPort: Int  type: String }
    type PodRuntime { uptimeInSeconds: Int  ports: [PodRuntimePort] }
    type Machine { podHostId: String  gpuDisplayName: String }
    type Pod {
      id: String!  name: String  desiredStatus: PodStatus  imageName: String  gpuCount: Int  costPerHr: Float
      lastStatusChange: String  env: [String]  machineId: String  machine: Machine  runtime: PodRuntime
      dockerArgs: String  dockerId: String  containerDiskInGb: Int  volumeInGb: Int  volumeMountPath: String
      memoryInGb: Float  vcpuCount: Float  podType: String  port: Int  ports: String  uptimeSeconds: Int
    }
    type RegistryAuth { id: String!  name: String }
    type User { id: String  pods: [Pod] }

    type Query {
      gpuTypes(input: GpuTypeFilter): [GpuType]
      pod(input: PodFilter!): Pod
      myself: User
    }
    type Mutation {
      podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput): Pod
      podRentInterruptable(input: PodRentInterruptableInput!): Pod
      podStop(input: PodStopInput!): Pod
      podResume(input: PodResumeInput!): Pod
      podTerminate(input: PodTerminateInput!): Boolean
      saveRegistryAuth(input: SaveRegistryAuthInput): RegistryAuth
    }
    """
)

DEFAULT_GPU_TYPES: list[dict[str, Any]] = [
    {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24, "securePrice": 0.69,
     "communityPrice": 0.34, "secureSpotPrice": 0.35, "communitySpotPrice": 0.2},
    {"id": "NVIDIA RTX A6000", "displayName": "RTX A6000", "memoryInGb": 48, "securePrice": 0.76,
     "communityPrice": 0.49, "secureSpotPrice": 0.4, "communitySpotPrice": 0.25},
    {"id": "NVIDIA A100 80GB PCIe", "displayName": "A100 PCIe", "memoryInGb": 80, "securePrice": 1.64,
     "communityPrice": 1.19, "secureSpotPrice": 0.82, "communitySpotPrice": 0.6},
    {"id": "NVIDIA A100-SXM4-80GB", "displayName": "A100 SXM", "memoryInGb": 80, "securePrice": 1.89,
     "communityPrice": 1.49, "secureSpotPrice": 0.95, "communitySpotPrice": None},
]


# ----------------------------------------------------------------------------------------- pods
@dataclass
class FakePod:
    id: str
    name: str
    image: str
    gpu_type_id: str
    gpu_count: int
    cloud_type: str
    docker_args: str
    env: dict[str, str]
    request: dict[str, Any]  # the validated input object as the server received it
    cost_per_hr: float
    api_key: str  # pod-scoped key, injected as RUNPOD_API_KEY like RunPod does
    spot: bool = False
    status: str = "RUNNING"
    started_at: float | None = None
    created_at: float = field(default_factory=time.time)
    restarts: int = 0
    exit_code: int | None = None
    handle: Any = None  # the runner's process / container
    terminated_by: str | None = None  # "pod" (its own pod-scoped key) or "account" (the user's key)
    # REST v2: PROVISIONING -> STARTING -> RUNNING -> EXITED | ERROR | TERMINATED
    api: str = "graphql"  # which API created it
    registry: str | None = None  # v2 registry credential id
    host: Any = None  # the fake Host whose GPUs it holds
    cuda: str | None = None
    stopped_by: str | None = None
    billed_s: float = 0.0  # running seconds before the current start
    logs: list[dict[str, str]] = field(default_factory=list)  # {ts, source, line}
    log_lock: Any = field(default_factory=threading.Lock)
    terminate_after: str | None = None  # GraphQL's provider-side deadline, as received
    cluster_id: str | None = None  # a member of this fake cluster (tests.fakes.runpod_v2.FakeCluster)
    node_rank: int | None = None
    cluster_env: dict[str, str] = field(default_factory=dict)  # PRIMARY_ADDR, NODE_RANK, ... (RunPod injects)

    def log(self, source: str, line: str) -> None:
        """Append one log line (container output or a system event) with a unique, increasing ts."""
        with self.log_lock:
            now = time.time()
            if self.logs:
                last = _parse_ts(self.logs[-1]["ts"])
                now = max(now, last + 1e-6)
            self.logs.append({"ts": _fmt_ts(now), "source": source, "line": line})

    def running_seconds(self) -> float:
        live = time.time() - self.started_at if self.status == "RUNNING" and self.started_at else 0.0
        return self.billed_s + live

    def public(self) -> dict[str, Any]:
        running = self.status == "RUNNING" and self.started_at is not None
        desired = {"PROVISIONING": "RUNNING", "STARTING": "RUNNING", "ERROR": "EXITED"}.get(self.status, self.status)
        return {
            "id": self.id, "name": self.name, "desiredStatus": desired, "imageName": self.image,
            "gpuCount": self.gpu_count, "costPerHr": self.cost_per_hr, "dockerArgs": self.docker_args,
            "lastStatusChange": f"{self.status} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
            "env": [f"{k}={v}" for k, v in self.env.items()], "machineId": "fake-machine",
            "machine": {"podHostId": f"{self.id}-host", "gpuDisplayName": self.gpu_type_id},
            "containerDiskInGb": self.request.get("containerDiskInGb"), "volumeInGb": self.request.get("volumeInGb"),
            "volumeMountPath": self.request.get("volumeMountPath"), "ports": self.request.get("ports"),
            "podType": "INTERRUPTABLE" if self.spot else "RESERVED",
            "uptimeSeconds": int(time.time() - self.started_at) if running else 0,
            "runtime": {"uptimeInSeconds": int(time.time() - self.started_at), "ports": []} if running else None,
        }


class PodRunner(Protocol):
    """Makes a fake pod's container run. ``poll`` returns None while running, else the exit code."""

    def start(self, pod: FakePod, env: dict[str, str]) -> None: ...

    def poll(self, pod: FakePod) -> int | None: ...

    def stop(self, pod: FakePod) -> None: ...


def _fmt_ts(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _parse_ts(ts: str) -> float:
    import calendar

    head, _, frac = ts.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S")) + (int(frac) / 1e6 if frac else 0.0)


def _pump(pod: FakePod, chunks: Any) -> None:
    """Copy a container's output into the pod's log (source ``container``) from a daemon thread."""

    def run() -> None:
        buf = b""
        try:
            for chunk in chunks:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    pod.log("container", line.decode("utf-8", errors="replace").rstrip("\r"))
        except Exception:  # noqa: BLE001 - the container went away: its log simply ends
            pass
        if buf:
            pod.log("container", buf.decode("utf-8", errors="replace"))

    threading.Thread(target=run, name=f"fake-runpod-log-{pod.id}", daemon=True).start()


def _docker_lines(container: Any) -> Any:
    return container.logs(stream=True, follow=True)


class IdleRunner:
    """Pods that run and never exit, with no process behind them (for client tests)."""

    def start(self, pod: FakePod, env: dict[str, str]) -> None:
        pod.handle = env

    def poll(self, pod: FakePod) -> int | None:
        return None

    def stop(self, pod: FakePod) -> None:
        pod.handle = None


class ProcessRunner:
    """Runs the pod's ``dockerArgs`` as a local process with the pod's env (no Docker needed)."""

    def __init__(self, base_env: dict[str, str] | None = None):
        self.base_env = dict(os.environ if base_env is None else base_env)

    def start(self, pod: FakePod, env: dict[str, str]) -> None:
        pod.handle = subprocess.Popen(
            shlex.split(pod.docker_args), env={**self.base_env, **env}, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        _pump(pod, iter(pod.handle.stdout.readline, b""))

    def poll(self, pod: FakePod) -> int | None:
        return pod.handle.poll() if pod.handle is not None else None

    def stop(self, pod: FakePod) -> None:
        proc = pod.handle
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGKILL)  # the host vanishes: no grace, like a preemption
        proc.wait(timeout=10)


class DockerRunner:
    """Runs the pod's image as a container on the local Docker engine, host networking, pod env."""

    def __init__(self, client: Any = None):
        if client is None:
            import docker

            client = docker.from_env()
        self.client = client

    def start(self, pod: FakePod, env: dict[str, str]) -> None:
        pod.handle = self.client.containers.run(
            pod.image, command=shlex.split(pod.docker_args) or None, environment=env,
            network_mode="host", detach=True, name=f"fake-runpod-{pod.id}-{pod.restarts}",
            labels={"trainpod.fake-runpod": pod.id},
        )
        _pump(pod, _docker_lines(pod.handle))

    def poll(self, pod: FakePod) -> int | None:
        if pod.handle is None:
            return None
        pod.handle.reload()
        if pod.handle.status in ("exited", "dead"):
            return int(pod.handle.attrs["State"]["ExitCode"])
        return None

    def stop(self, pod: FakePod) -> None:
        import docker

        handle, pod.handle = pod.handle, None
        if handle is None:
            return
        try:
            handle.remove(force=True)
        except docker.errors.NotFound:  # already gone: stopping is idempotent
            pass
        except docker.errors.APIError as exc:  # 409: a removal of it is already in progress
            if exc.status_code != 409:
                raise


# ----------------------------------------------------------------------------------------- faults
@dataclass
class Fault:
    """One injected failure. ``op`` = root field to hit (None: any); ``times`` = how often."""

    kind: str  # http | drop | delay | capacity | error | lose_response
    op: str | None = None
    times: int = 1
    status: int = 503
    message: str = "Something went wrong"
    seconds: float = 0.0


@dataclass
class Host:
    """Machines of one GPU type in one cloud with one CUDA version, and how many of their GPUs are free."""

    gpu_type_id: str
    cloud: str  # SECURE | COMMUNITY
    cuda: str
    free: int


def default_hosts(gpu_types: list[dict[str, Any]]) -> list[Host]:
    """Plenty of stock for every offered GPU type and cloud, on CUDA 12.4 (older driver), 12.8 and 13.0."""
    hosts = []
    for g in gpu_types:
        for cloud, price in (("SECURE", g.get("securePrice")), ("COMMUNITY", g.get("communityPrice"))):
            if price:
                hosts += [Host(g["id"], cloud, cuda, 8) for cuda in ("12.4", "12.8", "13.0")]
    return hosts


def cuda_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class FakeRunPod:
    """The fake's state and behaviour; :func:`serve` puts it behind HTTP."""

    def __init__(self, api_key: str, runner: PodRunner | None = None, base_url_for_pods: str = ""):
        from tests.contract.openapi import Contract

        self.api_key = api_key
        self.runner: PodRunner = runner or IdleRunner()
        self.gpu_types = [dict(g) for g in DEFAULT_GPU_TYPES]
        self.hosts: list[Host] = default_hosts(self.gpu_types)
        self.pods: dict[str, FakePod] = {}
        self.registry_auths: dict[str, dict[str, str]] = {}  # id -> {name, username, password} (both APIs)
        self.faults: list[Fault] = []
        self.requests: list[dict[str, Any]] = []  # every parsed GraphQL request body, in order
        self.v2_requests: list[dict[str, Any]] = []  # every v2 request: method, path, query, body, scope
        self.contract = Contract()
        self.violations: list[str] = []  # contract violations (requests we received, responses we sent)
        self.never_start = False  # pods stay PROVISIONING (no machine is ever assigned)
        self.stuck_name_suffixes: set[str] = set()  # v2 pods whose name ends so never get a machine
        self.pull_errors: set[str] = set()  # images whose pull fails: the pod goes ERROR, the system log says why
        self.balance = 100.0  # <= 0: creates are refused with 402
        self.pod_key_v2 = True  # whether a pod-scoped key may act on its own pod through v2 (unverified)
        self.pod_key_cluster = True  # whether it may read/delete its own cluster through v2 (unverified)
        self.pod_key_graphql_terminate = True  # whether it may podTerminate its own pod through GraphQL
        self.sse_max_s = 2.0  # the fake ends a log stream after this long (clients resume with Last-Event-ID)
        self.restart_on_exit = True  # RunPod restarts a container whose command exits
        self.base_url_for_pods = base_url_for_pods
        self.lock = threading.RLock()
        self.clusters: dict[str, Any] = {}  # id -> tests.fakes.runpod_v2.FakeCluster
        self.never_start_ranks: set[int] = set()  # cluster nodes of these ranks stay PROVISIONING

    # ------------------------------------------------------------------ test controls
    def inject(self, kind: str, op: str | None = None, **kw: Any) -> Fault:
        fault = Fault(kind=kind, op=op, **kw)
        with self.lock:
            self.faults.append(fault)
        return fault

    def set_stock(self, gpu_type_id: str, free: int, cloud: str | None = None, cuda: str | None = None) -> None:
        """Set the free GPUs of the matching hosts (e.g. 0: out of stock)."""
        with self.lock:
            for h in self.hosts:
                if h.gpu_type_id == gpu_type_id and cloud in (None, h.cloud) and cuda in (None, h.cuda):
                    h.free = free

    def preempt(self, pod_id: str) -> None:
        """Kill a pod mid-run the way a spot reclaim does: container gone, pod EXITED."""
        with self.lock:
            pod = self.pods[pod_id]
            self.runner.stop(pod)
            pod.log("system", "pod preempted: the host reclaimed the machine")
            self._halt(pod, "EXITED")

    def kill_container(self, pod_id: str) -> None:
        """SIGKILL a pod's container (the node's process dies; the pod itself stays, as when a host crashes
        the workload): the exit is seen by ``refresh`` like any other container exit."""
        with self.lock:
            handle = self.pods[pod_id].handle
        if handle is not None and hasattr(handle, "kill"):
            handle.kill()
        elif handle is not None and hasattr(handle, "send_signal"):
            os.killpg(handle.pid, signal.SIGKILL)

    def live_pods(self) -> list[FakePod]:
        with self.lock:
            self.refresh()
            return [p for p in self.pods.values() if p.status != "TERMINATED"]

    def refresh(self) -> None:
        """Advance pods: v2 pods are placed and started; containers that exited are restarted (or left EXITED)."""
        with self.lock:
            for pod in self.pods.values():
                if pod.status in ("PROVISIONING", "STARTING"):
                    if (not self.never_start and pod.node_rank not in self.never_start_ranks
                            and not any(pod.name.endswith(x) for x in self.stuck_name_suffixes)):
                        self._boot(pod)
                    continue
                if pod.status != "RUNNING" or pod.started_at is None:
                    continue
                code = self.runner.poll(pod)
                if code is None:
                    continue
                pod.exit_code = code
                pod.log("system", f"container exited with code {code}")
                if self.restart_on_exit:
                    pod.restarts += 1
                    pod.billed_s += time.time() - pod.started_at
                    pod.log("system", "restarting the container")
                    self.runner.stop(pod)  # the exited container is replaced, not left beside the new one
                    self._start(pod)
                else:
                    self._halt(pod, "EXITED")

    def take_fault(self, ops: list[str]) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and (fault.op is None or fault.op in ops):
                    fault.times -= 1
                    return fault
        return None

    def _halt(self, pod: FakePod, status: str) -> None:
        """The pod stops running (EXITED, ERROR or TERMINATED): billing stops, its GPUs go back to stock."""
        if pod.status == "RUNNING" and pod.started_at is not None:
            pod.billed_s += time.time() - pod.started_at
        pod.status, pod.started_at = status, None
        if pod.host is not None:
            pod.host.free += pod.gpu_count
            pod.host = None

    def _boot(self, pod: FakePod) -> None:
        """PROVISIONING -> STARTING (image pull) -> RUNNING, or ERROR when the pull fails."""
        pod.status = "STARTING"
        pod.log("system", f"pulling image {pod.image}")
        if pod.image in self.pull_errors:
            pod.log("system", f"error pulling image {pod.image}: unauthorized: authentication required")
            pod.log("system", "container could not be created: image pull failed")
            self._halt(pod, "ERROR")
            return
        try:
            self._start(pod)
        except Exception as exc:  # noqa: BLE001 - e.g. the Docker engine could not pull or run it
            pod.log("system", f"container could not be started: {exc}")
            self._halt(pod, "ERROR")
            return
        pod.status = "RUNNING"
        pod.log("system", "container started")

    # ------------------------------------------------------------------ resolvers
    def _start(self, pod: FakePod) -> None:
        env = {**pod.env, **pod.cluster_env, "RUNPOD_POD_ID": pod.id, "RUNPOD_API_KEY": pod.api_key,
               "RUNPOD_GPU_COUNT": str(pod.gpu_count)}
        if self.base_url_for_pods:
            env["RUNPOD_API_BASE_URL"] = self.base_url_for_pods
        self.runner.start(pod, env)
        pod.started_at = time.time()

    def _deploy(self, inp: dict[str, Any], spot: bool) -> dict[str, Any]:
        gpu = next((g for g in self.gpu_types if g["id"] == inp.get("gpuTypeId")), None)
        if gpu is None:
            raise GraphQLError(f"GPU type {inp.get('gpuTypeId')!r} is not available")
        if not inp.get("imageName"):
            raise GraphQLError("imageName is required")
        cloud = inp.get("cloudType") or "ALL"
        clouds = {"SECURE": ["secure"], "COMMUNITY": ["community"]}.get(cloud, ["community", "secure"])
        offered = [gpu[c + ("SpotPrice" if spot else "Price")] for c in clouds if gpu.get(c + ("SpotPrice" if spot else "Price"))]
        if not offered:
            raise GraphQLError(CAPACITY_MESSAGE)
        price = min(offered)
        if spot and float(inp["bidPerGpu"]) < float(price):
            raise GraphQLError(f"bid {inp['bidPerGpu']} is below the minimum bid {price}")
        pod = FakePod(
            id=secrets.token_hex(7), name=inp.get("name") or "", image=inp["imageName"],
            gpu_type_id=gpu["id"], gpu_count=int(inp.get("gpuCount") or 1), cloud_type=cloud,
            docker_args=inp.get("dockerArgs") or "", env={e["key"]: e["value"] for e in inp.get("env") or []},
            request=inp, cost_per_hr=round(float(price) * int(inp.get("gpuCount") or 1), 4),
            api_key="pod-" + secrets.token_hex(16), spot=spot, terminate_after=inp.get("terminateAfter"),
        )
        self.pods[pod.id] = pod
        pod.log("system", f"pod created ({'spot' if spot else 'on-demand'}, GraphQL)")
        if not self.never_start:
            self._start(pod)
            pod.log("system", "container started")
        return pod.public()

    def _pod_for(self, info: Any, pod_id: str) -> FakePod:
        scope = info.context["scope"]
        pod = self.pods.get(pod_id)
        if pod is None or (scope is not None and scope != pod_id):
            raise GraphQLError(f"Pod {pod_id} not found")
        return pod

    def root(self, op_type: str) -> dict[str, Callable[..., Any]]:
        def account_only(info: Any) -> None:
            if info.context["scope"] is not None:
                raise GraphQLError("This API key is scoped to a pod")

        def gpu_types(info: Any, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            account_only(info)
            wanted = (input or {}).get("id")
            out = []
            for g in self.gpu_types:
                if wanted is None or g["id"] == wanted:
                    row = dict(g)
                    row["lowestPrice"] = lambda _info, input=None, g=g: {
                        "minimumBidPrice": g.get("communitySpotPrice") or g.get("secureSpotPrice"),
                        "uninterruptablePrice": g.get("communityPrice") or g.get("securePrice")}
                    out.append(row)
            return out

        def pod(info: Any, input: dict[str, Any]) -> dict[str, Any] | None:
            self.refresh()
            scope, found = info.context["scope"], self.pods.get(input["podId"])
            if found is None or (scope is not None and scope != found.id):
                return None
            return found.public()

        def myself(info: Any) -> dict[str, Any]:
            account_only(info)
            self.refresh()
            # cluster member pods are managed through /v2/clusters (an assumption for GraphQL, as in v2's listPods)
            return {"id": "user-fake", "pods": [p.public() for p in self.pods.values()
                                                if p.status != "TERMINATED" and p.cluster_id is None]}

        def deploy(info: Any, input: dict[str, Any]) -> dict[str, Any]:
            account_only(info)
            return self._deploy(input, spot=False)

        def rent(info: Any, input: dict[str, Any]) -> dict[str, Any]:
            account_only(info)
            return self._deploy(input, spot=True)

        def stop(info: Any, input: dict[str, Any]) -> dict[str, Any]:
            found = self._pod_for(info, input["podId"])
            if found.status == "TERMINATED":
                raise GraphQLError(f"Pod {found.id} not found")
            self.runner.stop(found)
            self._halt(found, "EXITED")
            found.stopped_by = "account" if info.context["scope"] is None else "pod"
            found.log("system", "pod stopped")
            return found.public()

        def terminate(info: Any, input: dict[str, Any]) -> None:
            found = self._pod_for(info, input["podId"])
            if found.status == "TERMINATED":
                raise GraphQLError(f"Pod {found.id} not found")
            if info.context["scope"] is not None and not self.pod_key_graphql_terminate:
                raise GraphQLError("Forbidden: this API key may not terminate pods")
            # The pod is gone for the API at once (as on RunPod); its container is removed after.
            self._halt(found, "TERMINATED")
            found.terminated_by = "account" if info.context["scope"] is None else "pod"
            found.log("system", "pod terminated")
            self.runner.stop(found)
            return None

        def save_auth(info: Any, input: dict[str, Any]) -> dict[str, Any]:
            account_only(info)
            auth_id = "auth-" + secrets.token_hex(6)
            self.registry_auths[auth_id] = dict(input)
            return {"id": auth_id, "name": input["name"]}

        if op_type == "query":
            return {"gpuTypes": gpu_types, "pod": pod, "myself": myself}
        return {"podFindAndDeployOnDemand": deploy, "podRentInterruptable": rent, "podStop": stop,
                "podTerminate": terminate, "saveRegistryAuth": save_auth}

    # ------------------------------------------------------------------ one request
    def key_scope(self, key: str | None) -> tuple[bool, str | None]:
        """(known, scope): scope None = account key, else the pod id a pod-scoped key may touch."""
        if key == self.api_key:
            return True, None
        with self.lock:
            for pod in self.pods.values():
                if key and key == pod.api_key:
                    return True, pod.id
        return False, None


def _operation(doc: Any) -> tuple[str, list[str]]:
    for node in doc.definitions:
        if isinstance(node, OperationDefinitionNode):
            return node.operation.value, [sel.name.value for sel in node.selection_set.selections
                                          if hasattr(sel, "name")]
    return "query", []


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep pytest output clean
        return

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode())

    def _html_error(self, status: int) -> None:
        self._send(status, f"<html><body><h1>{status}</h1>upstream error</body></html>".encode(), "text/html")

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._v2("GET")

    def do_DELETE(self) -> None:  # noqa: N802
        self._v2("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._v2("PATCH")

    def _v2(self, method: str) -> None:
        from tests.fakes import runpod_v2

        if not urlparse(self.path).path.startswith("/v2/"):
            return self._json(404, {"errors": [{"message": f"no route {self.path}"}]})
        runpod_v2.handle(self, method)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        fake = self.server.fake
        url = urlparse(self.path)
        if url.path.startswith("/v2/"):
            return self._v2("POST")
        if url.path.rstrip("/") != "/graphql":
            return self._json(404, {"errors": [{"message": f"no route {url.path}"}]})
        auth = self.headers.get("Authorization", "")
        key = auth[7:] if auth.startswith("Bearer ") else (parse_qs(url.query).get("api_key") or [None])[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        known, scope = fake.key_scope(key)
        if not known:
            return self._json(401, {"errors": [{"message": "Unauthorized"}]})
        try:
            body = json.loads(raw)
            source = body["query"]
            variables = body.get("variables")
        except (ValueError, KeyError, TypeError):
            return self._json(400, {"errors": [{"message": "POST body must be JSON with a 'query'"}]})
        with fake.lock:
            fake.requests.append(body)
        try:
            doc = parse(source)
        except GraphQLError as exc:
            return self._json(400, {"errors": [{"message": exc.message}]})
        op_type, ops = _operation(doc)
        fault = fake.take_fault(ops)
        if fault is not None:
            if fault.kind == "delay":
                time.sleep(fault.seconds)
            elif fault.kind == "http":
                return self._html_error(fault.status)
            elif fault.kind == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            elif fault.kind == "capacity":
                return self._json(200, {"errors": [{"message": CAPACITY_MESSAGE}], "data": None})
            elif fault.kind == "error":
                return self._json(200, {"errors": [{"message": fault.message}], "data": None})
        with fake.lock:
            result = graphql_sync(SCHEMA, source, root_value=fake.root(op_type), variable_values=variables,
                                  context_value={"scope": scope})
        if fault is not None and fault.kind == "lose_response":
            return self._html_error(502)
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [{"message": e.message} for e in result.errors]
            status = 400 if result.data is None and not any(e.path for e in result.errors) else 200
            return self._json(status, payload)
        return self._json(200, payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeRunPod


@dataclass
class RunningFake:
    fake: FakeRunPod
    url: str
    server: _Server
    thread: threading.Thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for pod in list(self.fake.pods.values()):
            self.fake.runner.stop(pod)


def serve(api_key: str, runner: PodRunner | None = None) -> RunningFake:
    """Start the fake on 127.0.0.1 on a free port, in a daemon thread."""
    fake = FakeRunPod(api_key, runner)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    url = f"http://127.0.0.1:{server.server_address[1]}"
    fake.base_url_for_pods = url
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-runpod",
                              daemon=True)
    thread.start()
    return RunningFake(fake, url, server, thread)
