"""RunPod Instant Clusters: a multi-node preset becomes one cluster (``POST /v2/clusters``) whose nodes train
together under torchrun (c10d rendezvous; DeepSpeed through the same line), write to S3 from rank 0, and end
together (``DELETE /v2/clusters/{id}``).

``trainpod launch PRESET --remote runpod`` comes here when the preset's hardware has ``nnodes > 1`` (the
launcher picks the backend; runs are recorded as ``runpod-cluster``). What is taken from RunPod's OpenAPI
document (v2, synced 2026-08-18) and docs:

* ``CreateClusterRequest``: ``name``, ``type`` TRAINING, ``compute {gpuTypeId, gpuCountPerPod, podCount 2-250}``
  and one container config (``image``, ``args``, ``env``, ``disk``, ``ports``) for every node. It has no
  ``registry`` (private images are not supported for clusters yet), no ``cloud`` and no CUDA selection;
* every node gets ``PRIMARY_ADDR``, ``PRIMARY_PORT``, ``NODE_RANK`` (0 = primary), ``NUM_NODES``,
  ``NUM_TRAINERS``, ``WORLD_SIZE``; inter-node traffic must use ``ens1`` (``NCCL_SOCKET_IFNAME``, from the
  hardware table's ``env``);
* member pods cannot be deleted through the pod endpoints: the cluster is deleted as a whole, and member pods
  are not in ``GET /v2/pods`` by default (so ``runs sweep`` lists clusters itself).

Decisions:

* One command line for every node: the pod supervisor around the launch wrapper around torchrun with
  ``--node-rank=$NODE_RANK --rdzv-endpoint=$PRIMARY_ADDR:$PRIMARY_PORT`` and ``join_timeout`` =
  ``rendezvous_timeout_s`` (a node that never starts fails the run in bounded time). The supervisor fills in
  the node's values (no shell).
* Every node's supervisor enforces the same limits; ``max_cost_usd`` is for the cluster as a whole (each node
  divides by ``NUM_NODES`` x its pod's price). Node 0 deletes the cluster when its trainer exits (it writes the
  outputs); another node deletes it at once when its trainer crashed, and otherwise waits for node 0. The CLI's
  follow loop deletes it too (backstop) once the run has ended.
* No spot (REST v2 has no interruptible clusters) and no GPU-type fallbacks: a capacity error is reported.
"""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trainpod.backends.base import BackendBase, LaunchPlan, RunHandle, RunStatus
from trainpod.backends.runpod_plan import read_markers
from trainpod.contract import (
    DONE,
    ENV_RUN_SPEC,
    ENV_STOP_GRACE,
    EXIT_OK,
    EXIT_STOPPED,
    POD_EXIT,
    STATUS_JSON,
    node_exit_marker,
    node_log,
    s3_env,
)
from trainpod.errors import UnsupportedError
from trainpod.launchcmd import trainer_command
from trainpod.settings import Settings
from trainpod.spec import RunSpec

NAME = "runpod-cluster"
CLUSTER_NAME_PREFIX = "trainpod-"
SUPERVISOR = ["python", "-m", "trainpod.pod.supervisor", "--"]
MAX_NODES = 250  # ClusterCompute.podCount maximum


def cluster_name(run_id: str, attempt: int = 0) -> str:
    """Unique per launch attempt (``--resume`` rents a new cluster): the client adopts a cluster of that name
    after a lost reply instead of renting a second one."""
    return f"{CLUSTER_NAME_PREFIX}{run_id}-c{attempt}"


def run_id_of(name: str) -> str | None:
    body, sep, attempt = name[len(CLUSTER_NAME_PREFIX):].rpartition("-c")
    return body if name.startswith(CLUSTER_NAME_PREFIX) and sep and attempt.isdigit() and body else None


def node_command(spec: RunSpec) -> tuple[list[str], dict[str, str]]:
    """The supervisor wrapping the per-node torchrun line (``$NODE_RANK`` etc. filled in on the node)."""
    argv, env = trainer_command(spec, cluster=True)
    return [*SUPERVISOR, *argv], env


class RunPodClusterBackend(BackendBase):
    name = NAME
    pulls_images = True
    start_timeout_s = 600.0  # every node RUNNING by then, else the cluster is deleted
    poll_s = 5.0
    release_timeout_s = 60.0  # how long node 0 may take to delete the cluster after the run ended

    # ------------------------------------------------------------------ refusals
    def unsupported(self, spec: RunSpec, cpu_stand_in: bool = False) -> list[str]:
        """The single-pod refusals (hardware, dataset on s3://, ...) for one node, plus the cluster's own."""
        from trainpod.backends.runpod import RunPodBackend

        hw = spec.config.hardware
        one = hw.model_copy(update={"nnodes": 1})
        node = spec.model_copy(update={"config": spec.config.model_copy(update={"hardware": one}),
                                       "launch": spec.launch.model_copy(update={"nnodes": 1})})
        reasons = RunPodBackend().unsupported(node, cpu_stand_in=cpu_stand_in)
        nnodes = spec.launch.nnodes
        if not 2 <= nnodes <= MAX_NODES:
            reasons.append(f"a RunPod Instant Cluster has 2-{MAX_NODES} nodes, not {nnodes}")
        if spec.config.spot:
            reasons.append("RunPod Instant Clusters have no spot (interruptible) nodes: drop --spot / spot = true")
        return reasons

    # ------------------------------------------------------------------ plan
    def plan(self, spec: RunSpec, settings: Settings | None = None) -> LaunchPlan:
        from trainpod import credentials

        settings = self._use(settings)
        from trainpod.backends.runpod import expected_hours
        from trainpod.backends.runpod_v2 import ClusterCompute, CreateClusterRequest

        cfg, hw = spec.config, spec.config.hardware
        reasons = self.unsupported(spec, cpu_stand_in=settings.runpod_cpu_stand_in)
        if credentials.registry_auth(settings)[0] is not None:
            reasons.append("RunPod clusters cannot pull private images (CreateClusterRequest has no registry "
                           "credential): push the image to a public registry and unset TRAINPOD_REGISTRY_USERNAME/"
                           "TRAINPOD_REGISTRY_PASSWORD")
        if reasons:
            raise UnsupportedError("cannot run on a RunPod Instant Cluster:\n  - " + "\n  - ".join(reasons),
                                   "pick a cloud-2x8-* hardware profile (trainpod list --hardware) or another --remote")
        if not spec.storage.output.startswith("s3://"):
            raise UnsupportedError(
                f"RunPod runs must write to S3, but the output is '{spec.storage.output}'",
                "set TRAINPOD_STORAGE_URI=s3://BUCKET/prefix: rank 0 writes checkpoints and outputs there")
        if not spec.image:
            raise UnsupportedError("no image for the cluster: the RunSpec has no content-addressed image tag",
                                   "set TRAINPOD_REGISTRY to a registry RunPod can pull from")
        if cfg.max_runtime_minutes is None and cfg.max_cost_usd is None:
            raise UnsupportedError(
                "a RunPod cluster run needs a money guard: neither max_runtime_minutes nor max_cost_usd is set",
                "pass --max-runtime MINUTES and/or --max-cost USD (every node's watchdog enforces them)")
        nnodes, per_node = spec.launch.nnodes, max(1, hw.gpu_count)
        assert hw.runpod_gpu_type_id is not None  # unsupported() guarantees it
        hours, hours_source = expected_hours(cfg)
        notes = [f"duration: {hours_source}"]
        price = hw.price_per_gpu_hour
        estimate = estimate_cost(cfg, price, nnodes, hours, notes)
        notes.insert(0, "price: " + ("profile price_per_gpu_hour (offline; submit re-checks with the API catalog)"
                                     if price is not None else "none in the profile; submit takes it from the API"))
        command, launch_env = node_command(spec)
        env = {**_env(spec, settings), **launch_env}
        secret_names = credentials.pod_secret_names(spec, settings)  # a run-scoped S3 session, minted at submit
        notes.extend(f"WARNING: {w}" for w in credentials.warnings(spec, settings))
        request = CreateClusterRequest(
            name=cluster_name(spec.run_id), compute=ClusterCompute(
                gpuTypeId=hw.runpod_gpu_type_id, gpuCountPerPod=per_node, podCount=nnodes),
            image=spec.image, args=shlex.join(command), disk=hw.container_disk_gb,
            env={**env, **{n: "***" for n in secret_names}},
        )
        interface = hw.env.get("NCCL_SOCKET_IFNAME") or hw.env.get("GLOO_SOCKET_IFNAME")
        notes.append(f"{nnodes} nodes x {per_node} GPU {hw.runpod_gpu_type_id}; rendezvous at "
                     f"$PRIMARY_ADDR:$PRIMARY_PORT, join_timeout {hw.rendezvous_timeout_s}s; "
                     f"inter-node interface: {interface or 'not set in the hardware table'}")
        if cfg.deepspeed:
            # each rank writes its ZeRO shard to its own node's disk, and only node 0 uploads: the checkpoints in
            # S3 lack the other nodes' shards (the final weights are gathered on rank 0 and are complete)
            notes.append(f"WARNING: DeepSpeed ({cfg.deepspeed}) checkpoints of a {nnodes}-node run keep only node "
                         "0's shards in S3: --resume of this run cannot restore the other nodes' optimizer state "
                         "yet (the final weights are complete)")
        provider_request = {
            "api": "v2",
            "method": "POST",
            "path": "/v2/clusters",
            "body": request.body(),
            "node_command": shlex.join(command),
            "nodes": nnodes,
            "gpus_per_node": per_node,
            "gpu_type_id": hw.runpod_gpu_type_id,
            "price_per_gpu_hour": price,
            "expected_hours": None if hours is None else round(hours, 4),
            "max_runtime_minutes": cfg.max_runtime_minutes,
            "max_cost_usd": cfg.max_cost_usd,
            "rendezvous_timeout_s": hw.rendezvous_timeout_s,
        }
        return LaunchPlan(backend=self.name, run_id=spec.run_id, image=spec.image, command=command, env=env,
                          secret_env=secret_names, workdir="/workspace", gpus=per_node * nnodes,
                          provider_request=provider_request, estimated_cost_usd=estimate, notes=notes, spec=spec,
                          credentials=credentials.describe(spec, settings))

    def command_line(self, plan: LaunchPlan) -> str:
        """What ``--dry-run`` prints after the plan: every node's command line."""
        return "# every node runs (RunPod sets NODE_RANK, PRIMARY_ADDR, PRIMARY_PORT):\n" + shlex.join(plan.command)

    # ------------------------------------------------------------------ submit
    def submit(self, plan: LaunchPlan, settings: Settings | None = None) -> RunHandle:
        """Create the cluster at the API's price (re-checked against max_cost_usd), record the run as soon as the
        cluster exists, and wait (bounded) for every node to run; a cluster that does not start is deleted."""
        from trainpod.backends.runpod import pod_secret_env
        from trainpod.backends.runpod_api import CapacityError
        from trainpod.backends.runpod_v2 import CreateClusterRequest, V2Client
        from trainpod.redact import register_secret
        from trainpod.runs import RunRegistry
        from trainpod.spec import utcnow_iso

        settings = self._use(settings)
        spec, req = plan.spec, plan.provider_request
        api = V2Client.from_settings(settings)
        registry = RunRegistry(settings.state_path)
        offered = {g.id: g for g in api.gpu_types()}
        info = offered.get(req["gpu_type_id"])
        price = info.price("SECURE") if info else None
        if price is None:
            raise CapacityError(f"{req['gpu_type_id']} is not offered by RunPod now",
                                "pick another cloud-2x8-* hardware profile or retry later")
        estimate = estimate_cost(spec.config, price, req["nodes"], req["expected_hours"], [])
        body = dict(req["body"])
        secrets = pod_secret_env(plan, settings)  # every node gets the same run-scoped session
        for value in secrets.values():
            register_secret(value)
        env = {**plan.env, **secrets}
        previous = registry.get(spec.run_id) if spec.run_id in registry.ids() else None
        attempt = int(previous.extra.get("next_attempt", 1)) if previous else 0
        body.update(name=cluster_name(spec.run_id, attempt), env=env)
        cluster = api.create_cluster(CreateClusterRequest.model_validate(body))
        cfg = spec.config
        handle = RunHandle(
            run_id=spec.run_id, backend=self.name, preset=cfg.preset, provider_id=cluster.id,
            output=spec.storage.output, created=previous.created if previous else utcnow_iso(),
            extra={**(previous.extra if previous else {}), "cluster_name": body["name"], "nodes": req["nodes"],
                   "gpus_per_node": req["gpus_per_node"], "gpu_type_id": req["gpu_type_id"],
                   "price_per_gpu_hour": price, "price_source": "RunPod API catalog (secure)",
                   "cost_per_hr": round(price * req["gpus_per_node"] * req["nodes"], 4),
                   "estimated_cost_usd": estimate, "started": None, "next_attempt": attempt + 1,
                   "max_runtime_minutes": cfg.max_runtime_minutes, "max_cost_usd": cfg.max_cost_usd,
                   "stop_grace_seconds": spec.stop_grace_seconds, "cancelled": False},
        )
        registry.save(handle)
        if self._wait_started(api, cluster.id, req["nodes"]):
            return registry.update(spec.run_id, started=utcnow_iso())
        api.delete_cluster(cluster.id)
        registry.update(spec.run_id, cancelled=True)
        raise CapacityError(
            f"RunPod cluster {cluster.id} did not get all {req['nodes']} nodes running within "
            f"{self.start_timeout_s:g}s; it was deleted",
            f"retry later, or resume with `trainpod launch {cfg.preset} --remote runpod --resume {spec.run_id}`")

    def _wait_started(self, api: Any, cluster_id: str, nodes: int) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            cluster = api.cluster(cluster_id)
            if cluster is None:
                return False
            if cluster.pods.byStatus.get("RUNNING", 0) >= nodes:
                return True
            if cluster.pods.byStatus.get("ERROR") or time.monotonic() >= deadline:
                return False
            time.sleep(min(self.poll_s, max(0.0, deadline - time.monotonic())))

    # ------------------------------------------------------------------ observe
    def status(self, handle: RunHandle) -> RunStatus:
        from trainpod.backends.runpod_v2 import V2Client

        api = V2Client.from_settings(self.settings)
        cluster = api.cluster(handle.provider_id) if handle.provider_id else None
        markers = read_node_markers(handle.output, int(handle.extra.get("nodes") or 2), self.settings)
        progress = markers.get("status.json") or {}
        elapsed = cost = None
        if cluster is not None:
            nodes = api.cluster_pods(cluster.id)
            ups = [n.pod.uptime_seconds for n in nodes if n.pod.uptime_seconds is not None]
            if ups:
                elapsed = float(max(ups))
                cost = round(sum(n.pod.cost_per_hr or 0.0 for n in nodes) * elapsed / 3600, 4)
        common: dict[str, Any] = {"step": progress.get("step"), "loss": progress.get("loss"), "elapsed_s": elapsed,
                                  "cost_usd": cost}
        if DONE in markers:
            return RunStatus(state="succeeded", detail="DONE marker written", exit_code=0, **common)
        ended = run_end(markers, handle.provider_id)
        if ended is not None:
            name, info = ended
            code = int(info.get("exit_code", 1))
            where = "node 0" if name == POD_EXIT else name.rpartition(".")[2].replace("-", " ")
            detail = f"{where}: {info.get('reason', '')}"
            if code == 0:
                return RunStatus(state="succeeded", detail=detail, exit_code=0, **common)
            state = "cancelled" if handle.extra.get("cancelled") else "failed"
            return RunStatus(state=state, detail=detail, exit_code=code, **common)
        if cluster is None:
            if handle.extra.get("cancelled"):
                return RunStatus(state="cancelled", detail="cluster deleted by `runs cancel`", **common)
            return RunStatus(state="failed", detail="the cluster is gone and left no result in the output", **common)
        running = cluster.pods.byStatus.get("RUNNING", 0)
        if running < cluster.compute.podCount:
            gone = {k: v for k, v in cluster.pods.byStatus.items() if k in ("EXITED", "ERROR")}
            if gone and handle.extra.get("started"):
                return RunStatus(state="failed", detail=f"cluster {cluster.id}: nodes {gone}", **common)
            return RunStatus(state="pending", detail=f"cluster {cluster.id}: {running}/{cluster.compute.podCount} "
                                                     "nodes running", **common)
        return RunStatus(state="running", detail=f"cluster {cluster.id}: {running} nodes on "
                                                 f"{handle.extra.get('gpu_type_id')}", **common)

    def logs(self, handle: RunHandle, follow: bool = False, node: int | None = None) -> Iterator[str]:
        """Rank 0's ``logs/train.log`` from S3 (the trainer uploads it), or with ``node`` N the output of that
        node's launch line (``logs/node-N.log``, kept by its supervisor). ``follow`` tails until the run ends
        (and deletes a cluster that passed its limits)."""
        if node is not None:
            yield from self._node_logs(handle, node, follow)
            return
        yield from self._tail(handle, "logs/train.log", follow)

    def _tail(self, handle: RunHandle, name: str, follow: bool) -> Iterator[str]:
        """Complete lines of ``OUTPUT/name`` as they grow; with ``follow`` until the run ends."""
        from trainpod import storage
        from trainpod.backends.base import TERMINAL_STATES

        uri = handle.output.rstrip("/") + "/" + name
        seen = 0
        while True:
            data = storage.read_bytes(uri, self.settings) or b""
            if len(data) > seen:
                complete, _, _rest = data[seen:].decode("utf-8", errors="replace").rpartition("\n")
                if complete:
                    seen += len((complete + "\n").encode("utf-8"))
                    yield from complete.split("\n")
            if not follow:
                return
            status = self.status(handle)
            if status.state in (*TERMINAL_STATES, "unknown"):
                tail = (storage.read_bytes(uri, self.settings) or b"")[seen:].decode("utf-8", errors="replace")
                yield from (line for line in tail.split("\n") if line)
                return
            over = self.over_limit(handle, status)
            if over is not None:
                yield f"[trainpod] {over}: the nodes' watchdogs have not stopped it; deleting cluster {handle.provider_id}"
                self.cancel(handle)
                continue
            time.sleep(self.poll_s)

    def _node_logs(self, handle: RunHandle, node: int, follow: bool) -> Iterator[str]:
        """Node N's supervisor keeps its launch line's output at ``logs/node-N.log`` (every 10 s and at exit), so
        it is there after the cluster is gone; before the first upload, the member pod's own log (SSE)."""
        from trainpod import storage
        from trainpod.backends.runpod_v2 import V2Client
        from trainpod.errors import TrainpodError
        from trainpod.settings import load_settings

        total = int(handle.extra.get("nodes") or 0)
        if total and node >= total:
            raise TrainpodError(f"run {handle.run_id} has no node {node}", f"nodes are numbered 0..{total - 1}")
        if storage.read_bytes(handle.output.rstrip("/") + "/" + node_log(node)) is not None:
            yield from self._tail(handle, node_log(node), follow)
            return
        api = V2Client.from_settings(load_settings())
        nodes = {n.rank: n.pod for n in api.cluster_pods(handle.provider_id)} if handle.provider_id else {}
        pod = nodes.get(node)
        if pod is None:
            raise TrainpodError(f"run {handle.run_id}: node {node} left no log (no {node_log(node)} in "
                                f"{handle.output}, and cluster {handle.provider_id} is gone)",
                                "node 0's training log is in S3: omit --node")
        last = None
        while True:
            for event in api.logs(pod.id, last_event_id=last, tail=5000):
                last = event.id
                yield event.line
            if not follow or api.cluster(handle.provider_id) is None:
                return

    def over_limit(self, handle: RunHandle, status: RunStatus) -> str | None:
        """The CLI's backstop for the watchdogs: a limit passed by more than the stop grace (plus two polls)."""
        slack = float(handle.extra.get("stop_grace_seconds") or 60.0) + 2 * self.poll_s
        minutes, usd = handle.extra.get("max_runtime_minutes"), handle.extra.get("max_cost_usd")
        if minutes is not None and status.elapsed_s is not None and status.elapsed_s > minutes * 60 + slack:
            return f"max_runtime_minutes={minutes:g} passed ({status.elapsed_s:.0f}s running)"
        per_hr = handle.extra.get("cost_per_hr") or 0.0
        if usd is not None and status.cost_usd is not None and status.cost_usd > usd + per_hr * slack / 3600:
            return f"max_cost_usd={usd:g} passed (${status.cost_usd:.4f} so far, all nodes)"
        return None

    def release(self, handle: RunHandle, status: RunStatus, settings: Settings | None = None) -> Iterator[str]:
        """The last step of following a run: the cluster must be gone. Node 0 deletes it when its trainer exits;
        this waits for that (``release_timeout_s``) and deletes it from here otherwise, saying so."""
        from trainpod.backends.runpod_v2 import V2Client
        from trainpod.errors import TrainpodError

        if not handle.provider_id:
            return
        api = V2Client.from_settings(self._use(settings))
        deadline = time.monotonic() + self.release_timeout_s
        try:
            while api.cluster(handle.provider_id) is not None:
                if time.monotonic() >= deadline:
                    yield (f"[trainpod] run {handle.run_id} is {status.state} but cluster {handle.provider_id} "
                           "still exists; deleting it")
                    api.delete_cluster(handle.provider_id)
                    return
                time.sleep(min(1.0, self.poll_s))
        except TrainpodError as exc:
            yield (f"[trainpod] could not confirm that cluster {handle.provider_id} was deleted: {exc.message}; "
                   "check with `trainpod runs sweep`")

    def cancel(self, handle: RunHandle) -> None:
        """Delete the cluster (every node). Idempotent."""
        from trainpod.backends.runpod_v2 import V2Client

        if handle.provider_id:
            V2Client.from_settings(self.settings).delete_cluster(handle.provider_id)
        handle.extra["cancelled"] = True
        self._record_cancel(handle)


# ---------------------------------------------------------------------------------------- helpers
def estimate_cost(cfg: Any, price: float | None, nnodes: int, hours: float | None, notes: list[str]) -> float | None:
    """Price x GPUs per node x nodes x hours: the cluster as a whole, checked against max_cost_usd."""
    gpus = max(1, cfg.hardware.gpu_count) * nnodes
    if price is None:
        return None
    hourly = price * gpus
    if hours is None and cfg.max_cost_usd is not None:
        hours = cfg.max_cost_usd / hourly
        notes.append(f"duration capped by max_cost_usd: the watchdogs stop after {hours:.2f} h")
    if hours is None:
        return None
    estimate = math.ceil(hourly * hours * 100) / 100
    notes.append(f"estimate: ${price:g}/GPU-h x {gpus} GPUs ({nnodes} nodes) x {hours:.2f} h = ${estimate:.2f}")
    if cfg.max_cost_usd is not None and estimate > cfg.max_cost_usd:
        raise UnsupportedError(
            f"estimated cost ${estimate:.2f} for all {nnodes} nodes exceeds max_cost_usd ${cfg.max_cost_usd:.2f} "
            f"(${price:g}/GPU-h x {gpus} GPUs x {hours:.2f} h)",
            "raise --max-cost, lower --max-runtime, or pick a smaller cluster")
    return estimate


def _env(spec: RunSpec, settings: Settings) -> dict[str, str]:
    """Non-secret node env: the RunSpec, S3 location settings, hardware env (NCCL interface)."""
    env = dict(spec.config.hardware.env)
    env.update({ENV_RUN_SPEC: spec.to_json(), ENV_STOP_GRACE: f"{spec.stop_grace_seconds:g}", "PYTHONUNBUFFERED": "1",
                **s3_env(settings, key_id=False)})
    return env  # S3 credentials: trainpod.credentials (a run-scoped STS session, minted at submit)


def read_node_markers(output: str, nodes: int, settings: Settings | None = None) -> dict[str, Any]:
    """DONE, status.json and every node's exit marker from the run's output (parsed; DONE may be any bytes)."""
    return read_markers(output, settings, (DONE, STATUS_JSON, *(node_exit_marker(r) for r in range(nodes))))


def run_end(markers: dict[str, Any], cluster_id: str | None) -> tuple[str, dict[str, Any]] | None:
    """The exit marker that ends a cluster's run: node 0's (it writes the outputs), else a node that crashed
    (not 0, not the coordinated stop). Markers of an earlier cluster of the same run (``--resume``) are ignored."""
    mine = {n: i for n, i in markers.items() if n.startswith(POD_EXIT) and isinstance(i, dict)
            and i.get("cluster_id") == cluster_id}
    if POD_EXIT in mine:
        return POD_EXIT, mine[POD_EXIT]
    crashed = sorted((n, i) for n, i in mine.items() if int(i.get("exit_code", 1)) not in (EXIT_OK, EXIT_STOPPED))
    return crashed[0] if crashed else None


@dataclass(frozen=True)
class ClusterSweepItem:
    cluster_id: str
    cluster_name: str
    run_id: str | None
    verdict: str  # done | unknown | over-limit | keep
    reason: str
    deleted: bool = False


def sweep(settings: Settings, delete: bool = False, *, include_unknown: bool = False) -> list[ClusterSweepItem]:
    """trainpod's clusters (``trainpod-…-cN``) that should not be billing: run done, unknown here, or over its
    limits; with ``delete`` the flagged ones are deleted (an unknown one only with ``include_unknown``)."""
    from trainpod.backends.runpod_v2 import V2Client
    from trainpod.errors import TrainpodError
    from trainpod.runs import RunRegistry

    api = V2Client.from_settings(settings)
    registry = RunRegistry(settings.state_path)
    known = set(registry.ids())
    items = []
    for cluster in api.clusters(name_prefix=CLUSTER_NAME_PREFIX):
        run_id = run_id_of(cluster.name)
        if run_id is None:
            continue
        if run_id in known:
            handle = registry.get(run_id)
            output, nodes = handle.output, int(handle.extra.get("nodes") or cluster.compute.podCount)
        else:
            handle, nodes = None, cluster.compute.podCount
            output = f"{settings.storage_uri.rstrip('/')}/runs/{run_id}" if settings.storage_uri else None
        try:
            markers = read_node_markers(output, nodes, settings) if output else {}
        except TrainpodError:
            markers = {}
        end = run_end(markers, cluster.id)
        ended = [DONE] if DONE in markers else [end[0]] if end else []
        pods = api.cluster_pods(cluster.id)
        hours = max((n.pod.uptime_seconds or 0 for n in pods), default=0) / 3600
        per_hr = sum(n.pod.cost_per_hr or 0.0 for n in pods)
        if ended:
            verdict, reason = "done", f"the run has ended ({', '.join(sorted(ended))} in its output)"
        elif handle is None:
            verdict, reason = "unknown", "no run of this name in the local run registry"
        elif (rt := handle.extra.get("max_runtime_minutes")) is not None and hours * 60 > float(rt):
            verdict, reason = "over-limit", f"up {hours * 60:.0f} min > max_runtime_minutes {rt:g}"
        elif (usd := handle.extra.get("max_cost_usd")) is not None and per_hr * hours > float(usd):
            verdict, reason = "over-limit", f"cost ${per_hr * hours:.2f} > max_cost_usd {usd:g}"
        elif any(n.pod.desired_status in ("EXITED", "ERROR") for n in pods):
            verdict, reason = "done", "a node has exited"
        else:
            verdict, reason = "keep", "running within its limits"
        deleted = False
        if delete and (verdict in ("done", "over-limit") or (verdict == "unknown" and include_unknown)):
            api.delete_cluster(cluster.id)
            deleted = True
        items.append(ClusterSweepItem(cluster.id, cluster.name, run_id, verdict, reason, deleted))
    return items
