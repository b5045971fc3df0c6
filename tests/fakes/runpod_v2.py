"""REST v2 routes of the loopback RunPod fake, held to RunPod's OpenAPI document.

:func:`handle` serves one ``/v2/...`` request for :class:`tests.fakes.runpod_api.FakeRunPod`: it finds the
operation in the vendored document, checks the key, validates the query, headers and JSON body (violations
→ 422 problem with ``errors``, as on RunPod, and recorded in ``fake.violations``), applies injected faults by
``operationId``, runs the operation, and validates its own answer (status, content type, headers, closed
body) before sending it: a response that breaks the contract is recorded and replaced by a 500.

Behaviours taken from the document: paths, parameters (``include=AVAILABILITY`` requires ``product``;
``count``/``cloud``/``minCudaVersion`` only with it), bodies, status codes (create 201, delete 204, terminate
action 204, invalid action 409, credential in use 400), ``Retry-After`` integer seconds, the pod lifecycle and
the actions each status allows, ``cost`` 0 when not running, ``runtime`` null when not RUNNING, log events
``{source, line, ts}`` with ``id`` = ts. Assumptions (not in the document): the problem texts, that capacity is
a 400 whose detail reads "no longer any instances available", that ``getPod`` on a terminated pod is 404, how a
pod-scoped key is limited (403 on account operations, 404 on other pods), and the availability thresholds.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

CAPACITY_DETAIL = ("There are no longer any instances available with the requested specifications. "
                   "Please refresh and try again.")
POD_OPS = {"getPod", "deletePod", "podAction", "getPodLogs"}  # what a pod-scoped key may do (own pod only)
CLUSTER_OPS = {"getCluster", "deleteCluster", "listClusterPods"}  # ... and on its own cluster (an assumption)
ACTIONS = {"RUNNING": ["stop", "restart", "terminate"], "EXITED": ["start", "terminate"],
           "ERROR": ["start", "terminate"], "PROVISIONING": ["stop", "terminate"],
           "STARTING": ["stop", "terminate"], "TERMINATED": []}


class Answer(Exception):
    """Raised by an operation to answer with a problem."""

    def __init__(self, status: int, detail: str, errors: list[str] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.errors, self.headers = status, detail, errors, headers or {}


TITLES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 422: "Unprocessable Entity", 429: "Too Many Requests",
          500: "Internal Server Error", 503: "Service Unavailable"}


def problem(status: int, detail: str, errors: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"title": TITLES.get(status, "Error"), "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return body


def handle(handler: Any, method: str) -> None:
    fake = handler.server.fake
    url = urlparse(handler.path)
    query = parse_qs(url.query, keep_blank_values=True)
    length = int(handler.headers.get("Content-Length") or 0)
    raw = handler.rfile.read(length) if length else b""
    op = fake.contract.operation(method, url.path)
    if op is None:
        status = 405 if fake.contract.path_known(url.path) else 404
        return _send_problem(handler, None, status, f"no operation {method} {url.path}")
    op_id = op.spec["operationId"]
    auth = handler.headers.get("Authorization", "")
    known, scope = fake.key_scope(auth[7:] if auth.startswith("Bearer ") else None)
    if not known:
        return _send_problem(handler, op, 401, "missing or invalid API key")
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except ValueError:
            return _send_problem(handler, op, 400, "the request body is not valid JSON")
    headers = {k: v for k, v in handler.headers.items()}
    with fake.lock:
        fake.v2_requests.append({"method": method, "path": url.path, "op": op_id, "query": query, "body": body,
                                 "headers": {k: v for k, v in headers.items() if k.lower() != "authorization"},
                                 "scope": scope})
    errors = fake.contract.request_errors(op, query, headers, body)
    if errors:
        with fake.lock:
            fake.violations += [f"request {method} {url.path}: {e}" for e in errors]
        return _send_problem(handler, op, 422, "the request does not match the API contract", errors)
    fault = fake.take_fault([op_id])
    if fault is not None:
        if fault.kind == "delay":
            time.sleep(fault.seconds)
        elif fault.kind == "http":
            return handler._html_error(fault.status)  # an edge/proxy page, not an API answer
        elif fault.kind == "drop":
            handler.close_connection = True
            handler.connection.shutdown(2)
            return None
        elif fault.kind == "capacity":
            return _send_problem(handler, op, 400, CAPACITY_DETAIL)
        elif fault.kind == "rate_limit":
            return _send_problem(handler, op, 429, "rate limit exceeded for window minute",
                                 headers={"Retry-After": str(int(fault.seconds))})
        elif fault.kind in ("problem", "error"):
            return _send_problem(handler, op, fault.status, fault.message)
    if scope is not None and op_id in CLUSTER_OPS:
        own = fake.pods.get(scope)
        if not fake.pod_key_cluster or own is None or own.cluster_id is None:
            return _send_problem(handler, op, 403, "this API key is scoped to a pod and may not do this")
        if op.path_params.get("id") != own.cluster_id:
            return _send_problem(handler, op, 404, f"cluster {op.path_params.get('id')} not found")
    elif scope is not None:
        if op_id not in POD_OPS or not fake.pod_key_v2:
            return _send_problem(handler, op, 403, "this API key is scoped to a pod and may not do this")
        if op.path_params.get("id") != scope:
            return _send_problem(handler, op, 404, f"pod {op.path_params.get('id')} not found")
    try:
        if op_id == "getPodLogs":
            return _stream_logs(handler, fake, op, query, headers)
        with fake.lock:
            status, payload = OPERATIONS[op_id](fake, op, query, body, scope)
    except Answer as exc:
        return _send_problem(handler, op, exc.status, exc.detail, exc.errors, exc.headers)
    if fault is not None and fault.kind == "lose_response":
        return handler._html_error(502)  # applied, but the answer never arrives
    ctype = "application/json"
    out = b"" if payload is None else json.dumps(payload).encode()
    _send_checked(handler, op, status, out, ctype if payload is not None else None)


def _send_problem(handler: Any, op: Any, status: int, detail: str, errors: list[str] | None = None,
                  headers: dict[str, str] | None = None) -> None:
    body = json.dumps(problem(status, detail, errors)).encode()
    _send_checked(handler, op, status, body, "application/problem+json", headers)


def _send_checked(handler: Any, op: Any, status: int, body: bytes, ctype: str | None,
                  headers: dict[str, str] | None = None) -> None:
    fake = handler.server.fake
    all_headers = {**(headers or {})}
    if ctype:
        all_headers["Content-Type"] = ctype
    if op is not None:
        errors = fake.contract.response_errors(op, status, all_headers, body)
        if errors:
            with fake.lock:
                fake.violations += [f"response {op.method.upper()} {op.template} {status}: {e}" for e in errors]
            status, ctype, all_headers = 500, "application/problem+json", {"Content-Type": "application/problem+json"}
            body = json.dumps(problem(500, "the fake's answer broke the contract: " + "; ".join(errors))).encode()
    handler.send_response(status)
    for k, v in all_headers.items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if body:
        handler.wfile.write(body)


# ----------------------------------------------------------------------------------------- views
def pod_view(fake: Any, pod: Any) -> dict[str, Any]:
    running = pod.status == "RUNNING" and pod.started_at is not None
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pod.created_at))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pod.started_at)) if running else None
    return {
        "id": pod.id, "name": pod.name, "status": pod.status, "actions": ACTIONS[pod.status],
        "image": pod.image, "args": pod.docker_args, "disk": int(pod.request.get("disk") or
                                                                  pod.request.get("containerDiskInGb") or 20),
        "mounts": {}, "ports": list(pod.request.get("ports") or []), "env": dict(pod.env),
        "registry": pod.registry, "gpu": {"id": pod.gpu_type_id, "count": pod.gpu_count},
        "cloud": pod.cloud_type if pod.cloud_type in ("SECURE", "COMMUNITY") else "COMMUNITY",
        "dataCenterId": "FAKE-DC-1" if pod.cuda else None, "cudaVersion": pod.cuda,
        "ssh": {"proxy": None, "direct": None}, "template": None,
        "cost": pod.cost_per_hr if pod.status in ("RUNNING", "STARTING", "PROVISIONING") else 0.0,
        "locked": False, "globalNetworking": {"enabled": False},
        "runtime": {"uptime": int(time.time() - pod.started_at), "ports": []} if running else None,
        "createdAt": created, "startedAt": started,
        **({"cluster": {"id": pod.cluster_id, "rank": pod.node_rank, "ip": pod.cluster_env["NODE_ADDR"]}}
           if pod.cluster_id else {}),
    }


def _find(fake: Any, pod_id: str) -> Any:
    fake.refresh()
    pod = fake.pods.get(pod_id)
    if pod is None or pod.status == "TERMINATED":
        raise Answer(404, f"pod {pod_id} not found")
    return pod


def _availability(free: int) -> str:
    return "NONE" if free <= 0 else "LOW" if free <= 2 else "MEDIUM" if free < 8 else "HIGH"


def _cuda_ok(version: str, query: dict[str, list[str]]) -> bool:
    from tests.fakes.runpod_api import cuda_key

    floor = (query.get("minCudaVersion") or [None])[-1]
    exact = (query.get("cudaVersions") or [None])[-1]
    if floor:
        want = cuda_key(floor) if "." in floor else (int(floor), 0)
        return cuda_key(version) >= want
    if exact:
        return version in exact.split(",")
    return True


# ----------------------------------------------------------------------------------------- operations
def create_pod(fake: Any, op: Any, query: Any, body: dict[str, Any], scope: Any) -> tuple[int, Any]:
    from tests.fakes.runpod_api import FakePod, cuda_key

    gpu_req = body.get("gpu")
    if gpu_req is None or "cpu" in body:
        raise Answer(400, "exactly one of gpu or cpu must be set (trainpod's fake serves GPU pods only)")
    if gpu_req.get("allowedCudaVersions") and gpu_req.get("minCudaVersion"):
        raise Answer(400, "gpu.allowedCudaVersions and gpu.minCudaVersion are mutually exclusive")
    if body.get("registry") and body["registry"] not in fake.registry_auths:
        raise Answer(400, f"registry credential {body['registry']} not found")
    if fake.balance <= 0:
        raise Answer(402, "insufficient balance: add funds to deploy this pod")
    gpu = next((g for g in fake.gpu_types if g["id"] == gpu_req["id"]), None)
    if gpu is None:
        raise Answer(400, f"GPU type {gpu_req['id']!r} does not exist")
    cloud = body.get("cloud", "SECURE")
    price = gpu.get("securePrice" if cloud == "SECURE" else "communityPrice")
    count = int(gpu_req.get("count", 1))
    floor, exact = gpu_req.get("minCudaVersion"), gpu_req.get("allowedCudaVersions") or []
    hosts = [h for h in fake.hosts if h.gpu_type_id == gpu["id"] and h.cloud == cloud and h.free >= count
             and (not floor or cuda_key(h.cuda) >= cuda_key(floor)) and (not exact or h.cuda in exact)]
    if not price or not hosts:
        raise Answer(400, CAPACITY_DETAIL)
    host = max(hosts, key=lambda h: cuda_key(h.cuda))
    host.free -= count
    pod = FakePod(
        id=secrets.token_hex(7), name=body["name"], image=body["image"], gpu_type_id=gpu["id"], gpu_count=count,
        cloud_type=cloud, docker_args=body.get("args", ""), env=dict(body.get("env") or {}), request=body,
        cost_per_hr=round(float(price) * count, 4), api_key="pod-" + secrets.token_hex(16), status="PROVISIONING",
        api="v2", registry=body.get("registry"), host=host, cuda=host.cuda,
    )
    fake.pods[pod.id] = pod
    pod.log("system", f"pod created; machine assigned: {count}x {gpu['id']} ({cloud}, CUDA {host.cuda})")
    return 201, pod_view(fake, pod)


def get_pod(fake: Any, op: Any, query: Any, body: Any, scope: Any) -> tuple[int, Any]:
    return 200, pod_view(fake, _find(fake, op.path_params["id"]))


def list_pods(fake: Any, op: Any, query: Any, body: Any, scope: Any) -> tuple[int, Any]:
    fake.refresh()
    members = (query.get("includeClusterPods") or ["false"])[-1] == "true"
    return 200, {"pods": [pod_view(fake, p) for p in fake.pods.values() if p.status != "TERMINATED"
                          and (members or p.cluster_id is None)]}


def _not_a_member(pod: Any) -> None:
    if pod.cluster_id is not None:
        raise Answer(400, f"pod {pod.id} is a member of cluster {pod.cluster_id}: manage it through "
                          f"/v2/clusters/{pod.cluster_id}")


def delete_pod(fake: Any, op: Any, query: Any, body: Any, scope: Any) -> tuple[int, Any]:
    pod = _find(fake, op.path_params["id"])
    _not_a_member(pod)
    fake._halt(pod, "TERMINATED")
    pod.terminated_by = "account" if scope is None else "pod"
    pod.log("system", "pod terminated")
    fake.runner.stop(pod)
    return 204, None


def pod_action(fake: Any, op: Any, query: Any, body: dict[str, Any], scope: Any) -> tuple[int, Any]:
    pod = _find(fake, op.path_params["id"])
    _not_a_member(pod)
    action = body["action"]
    if action not in ACTIONS[pod.status]:
        raise Answer(409, f"action {action} is not valid for a pod that is {pod.status}")
    if action == "terminate":
        return delete_pod(fake, op, query, body, scope)
    if action == "stop":
        fake.runner.stop(pod)
        fake._halt(pod, "EXITED")
        pod.stopped_by = "account" if scope is None else "pod"
        pod.log("system", "pod stopped")
    else:
        raise Answer(400, f"the fake does not implement the {action} action")
    return 200, pod_view(fake, pod)


def list_gpu_types(fake: Any, op: Any, query: dict[str, list[str]], body: Any, scope: Any) -> tuple[int, Any]:
    include = (query.get("include") or [""])[-1]
    if include and not query.get("product"):
        raise Answer(400, "include=AVAILABILITY requires product")
    if not include:
        for name in ("product", "count", "cloud", "countryCodes", "cudaVersions", "minCudaVersion"):
            if name in query:
                raise Answer(400, f"{name} is valid only with include=AVAILABILITY")
    if query.get("cudaVersions") and query.get("minCudaVersion"):
        raise Answer(400, "cudaVersions and minCudaVersion are mutually exclusive")
    cloud = (query.get("cloud") or ["SECURE"])[-1]
    count = int((query.get("count") or ["1"])[-1])
    out = []
    for g in fake.gpu_types:
        row: dict[str, Any] = {
            "id": g["id"], "name": g.get("displayName") or g["id"], "pool": None, "manufacturer": "NVIDIA",
            "memory": int(g.get("memoryInGb") or 0), "secure": bool(g.get("securePrice")),
            "community": bool(g.get("communityPrice")),
            "price": {"secure": float(g.get("securePrice") or 0.0), "community": float(g.get("communityPrice") or 0.0)},
            "maxCount": {"secure": 8, "community": 8},
        }
        if include:
            hosts = [h for h in fake.hosts if h.gpu_type_id == g["id"] and h.cloud == cloud and _cuda_ok(h.cuda, query)]
            free = sum(h.free for h in hosts if h.free >= count)
            row["availability"] = _availability(free)
            versions: dict[str, bool] = {}
            for h in hosts:
                versions[h.cuda] = versions.get(h.cuda, False) or h.free >= count
            if versions:
                row["cudaVersions"] = [{"version": v, "available": a} for v, a in sorted(versions.items())]
            if free:
                row["dataCenters"] = [{"id": "FAKE-DC-1", "name": "Fake DC 1", "availability": _availability(free)}]
        out.append(row)
    return 200, {"gpus": out}


def list_registries(fake: Any, op: Any, query: Any, body: Any, scope: Any) -> tuple[int, Any]:
    return 200, {"registries": [{"id": i, "name": r["name"]} for i, r in fake.registry_auths.items()]}


def create_registry(fake: Any, op: Any, query: Any, body: dict[str, Any], scope: Any) -> tuple[int, Any]:
    if any(r["name"] == body["name"] for r in fake.registry_auths.values()):
        raise Answer(400, f"a registry credential named {body['name']!r} already exists")
    reg_id = "reg" + secrets.token_hex(6)
    fake.registry_auths[reg_id] = dict(body)
    return 201, {"id": reg_id, "name": body["name"]}


def delete_registry(fake: Any, op: Any, query: Any, body: Any, scope: Any) -> tuple[int, Any]:
    reg_id = op.path_params["id"]
    if reg_id not in fake.registry_auths:
        raise Answer(404, f"registry credential {reg_id} not found")
    fake.refresh()
    users = [p.id for p in fake.pods.values() if p.registry == reg_id and p.status != "TERMINATED"]
    if users:
        raise Answer(400, f"registry credential {reg_id} is in use by pod {users[0]}")
    del fake.registry_auths[reg_id]
    return 204, None


def list_pod_billing(fake: Any, op: Any, query: dict[str, list[str]], body: Any, scope: Any) -> tuple[int, Any]:
    fake.refresh()
    pod_id = (query.get("podId") or [None])[-1]
    bucket = (query.get("bucketSize") or ["day"])[-1]
    now = time.time()
    end = (int(now) // 3600 + 1) * 3600
    start = end - 30 * 86400
    fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))  # noqa: E731
    records, totals = [], {"totalAmount": 0.0, "gpuAmount": 0.0, "cpuAmount": 0.0, "diskAmount": 0.0}
    for pod in fake.pods.values():
        if pod_id not in (None, pod.id):
            continue
        gpu = round(pod.cost_per_hr * pod.running_seconds() / 3600, 6)
        if gpu <= 0:
            continue
        amounts = {"totalAmount": gpu, "gpuAmount": gpu, "cpuAmount": 0.0, "diskAmount": 0.0}
        bucket_start = int(pod.created_at) // 3600 * 3600
        records.append({"startTime": fmt(bucket_start), "endTime": fmt(end), "podId": pod.id, **amounts})
        for k, v in amounts.items():
            totals[k] = round(totals[k] + v, 6)
    return 200, {"records": records, "metadata": {
        "query": {"startTime": fmt(start), "endTime": fmt(end), "bucketSize": bucket, "podId": pod_id},
        "recordCount": len(records), "uniquePodCount": len({r["podId"] for r in records}), "totals": totals}}


# ----------------------------------------------------------------------------------------- clusters
@dataclass
class FakeCluster:
    """An Instant Cluster: ``podCount`` identical pods on one private network. Here every node is a container
    on the local engine with host networking, so the "private network" is loopback: node N's ``NODE_ADDR`` is
    127.0.0.(N+2), ``PRIMARY_ADDR`` is node 0's, and the cluster gets its own free ``PRIMARY_PORT``."""

    id: str
    name: str
    request: dict[str, Any]
    pod_ids: list[str]
    primary_port: int
    created_at: float = field(default_factory=time.time)
    deleted_by: str | None = None  # "pod" (a member's pod-scoped key) or "account"


def node_addr(rank: int) -> str:
    """Node N's address on the "cluster network": its own loopback address (all of 127/8 is loopback on Linux),
    so nodes that share this machine still differ by address, as torchrun's rendezvous needs (it tells nodes
    apart by address and pid, and containers often have the same pids)."""
    return f"127.0.0.{rank + 2}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_view(fake: Any, cluster: FakeCluster) -> dict[str, Any]:
    fake.refresh()
    members = [fake.pods[i] for i in cluster.pod_ids if fake.pods[i].status != "TERMINATED"]
    by_status: dict[str, int] = {}
    for pod in members:
        by_status[pod.status] = by_status.get(pod.status, 0) + 1
    out: dict[str, Any] = {
        "id": cluster.id, "name": cluster.name, "type": cluster.request["type"],
        "compute": dict(cluster.request["compute"]), "pods": {"total": len(members), "byStatus": by_status},
        "network": {"cidr": "127.0.0.0/8"},
        "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cluster.created_at)),
    }
    primary = fake.pods[cluster.pod_ids[0]]
    if primary.status != "TERMINATED":
        out["primary"] = {"podId": primary.id, "status": primary.status}
    if any(p.host is not None for p in members):
        out["dataCenterId"] = "FAKE-DC-1"
    return out


def _find_cluster(fake: Any, cluster_id: str) -> FakeCluster:
    cluster = fake.clusters.get(cluster_id)
    if cluster is None or cluster.deleted_by is not None:
        raise Answer(404, f"cluster {cluster_id} not found")
    return cluster


def create_cluster(fake: Any, op: Any, query: Any, body: dict[str, Any], scope: Any) -> tuple[int, Any]:
    from tests.fakes.runpod_api import FakePod

    compute = body["compute"]
    count, per_pod = int(compute["podCount"]), int(compute["gpuCountPerPod"])
    if body["type"] != "TRAINING":
        raise Answer(400, f"the fake serves TRAINING clusters only, not {body['type']}")
    if fake.balance <= 0:
        raise Answer(402, "insufficient balance: add funds to deploy this cluster")
    gpu = next((g for g in fake.gpu_types if g["id"] == compute["gpuTypeId"]), None)
    if gpu is None:
        raise Answer(400, f"GPU type {compute['gpuTypeId']!r} does not exist")
    price = gpu.get("securePrice")
    hosts = [h for h in fake.hosts if h.gpu_type_id == gpu["id"] and h.cloud == "SECURE" and h.free >= per_pod]
    if not price or sum(h.free // per_pod for h in hosts) < count:
        raise Answer(400, CAPACITY_DETAIL)
    cluster_id = "cluster_" + secrets.token_hex(6)
    port = _free_port()
    cluster = FakeCluster(id=cluster_id, name=body["name"], request=body, pod_ids=[], primary_port=port)
    for rank in range(count):
        host = next(h for h in hosts if h.free >= per_pod)
        host.free -= per_pod
        primary = node_addr(0)
        env = {"PRIMARY_ADDR": primary, "PRIMARY_PORT": str(port), "MASTER_ADDR": primary,
               "MASTER_PORT": str(port), "NODE_ADDR": node_addr(rank), "NODE_RANK": str(rank),
               "NUM_NODES": str(count), "NUM_TRAINERS": str(per_pod), "HOST_NODE_ADDR": f"{primary}:{port}",
               "WORLD_SIZE": str(count * per_pod)}
        pod = FakePod(
            id=secrets.token_hex(7), name=f"{body['name']}-node-{rank}", image=body["image"], gpu_type_id=gpu["id"],
            gpu_count=per_pod, cloud_type="SECURE", docker_args=body.get("args", ""),
            env=dict(body.get("env") or {}), request=body, cost_per_hr=round(float(price) * per_pod, 4),
            api_key="pod-" + secrets.token_hex(16), status="PROVISIONING", api="v2", host=host, cuda=host.cuda,
            cluster_id=cluster_id, node_rank=rank, cluster_env=env,
        )
        fake.pods[pod.id] = pod
        cluster.pod_ids.append(pod.id)
        pod.log("system", f"cluster {cluster_id} node {rank}: {per_pod}x {gpu['id']} (CUDA {host.cuda})")
    fake.clusters[cluster_id] = cluster
    return 201, cluster_view(fake, cluster)


def get_cluster(fake: Any, op: Any, query: Any, body: Any, scope: Any) -> tuple[int, Any]:
    return 200, cluster_view(fake, _find_cluster(fake, op.path_params["id"]))


def list_clusters(fake: Any, op: Any, query: Any, body: Any, scope: Any) -> tuple[int, Any]:
    return 200, {"clusters": [cluster_view(fake, c) for c in fake.clusters.values() if c.deleted_by is None]}


def list_cluster_pods(fake: Any, op: Any, query: Any, body: Any, scope: Any) -> tuple[int, Any]:
    cluster = _find_cluster(fake, op.path_params["id"])
    fake.refresh()
    return 200, {"pods": [pod_view(fake, fake.pods[i]) for i in cluster.pod_ids
                          if fake.pods[i].status != "TERMINATED"]}


def delete_cluster(fake: Any, op: Any, query: Any, body: Any, scope: Any) -> tuple[int, Any]:
    """Every member pod is gone for the API at once, then their containers are removed (RunPod's order)."""
    cluster = _find_cluster(fake, op.path_params["id"])
    cluster.deleted_by = "account" if scope is None else "pod"
    members = [fake.pods[i] for i in cluster.pod_ids]
    for pod in members:
        if pod.status != "TERMINATED":
            fake._halt(pod, "TERMINATED")
            pod.terminated_by = cluster.deleted_by
            pod.log("system", f"pod terminated with cluster {cluster.id}")
    for pod in members:
        fake.runner.stop(pod)
    return 204, None


OPERATIONS = {"createPod": create_pod, "getPod": get_pod, "listPods": list_pods, "deletePod": delete_pod,
              "podAction": pod_action, "listGpuTypes": list_gpu_types, "listRegistries": list_registries,
              "createRegistry": create_registry, "deleteRegistry": delete_registry,
              "listPodBilling": list_pod_billing, "createCluster": create_cluster, "getCluster": get_cluster,
              "listClusters": list_clusters, "listClusterPods": list_cluster_pods, "deleteCluster": delete_cluster}


# ----------------------------------------------------------------------------------------- logs (SSE)
def _stream_logs(handler: Any, fake: Any, op: Any, query: dict[str, list[str]], headers: dict[str, str]) -> None:
    with fake.lock:
        pod = _find(fake, op.path_params["id"])
    source = (query.get("source") or [None])[-1]
    cursor = next((v for k, v in headers.items() if k.lower() == "last-event-id"), None)
    since = (query.get("since") or [None])[-1]
    tail = int((query.get("tail") or ["100"])[-1])

    def wanted(entries: list[dict[str, str]]) -> list[dict[str, str]]:
        return [e for e in entries if source in (None, e["source"])]

    with pod.log_lock:
        backlog = wanted(list(pod.logs))
    if cursor:
        backlog = [e for e in backlog if e["ts"] > cursor]
    elif since:
        backlog = [e for e in backlog if e["ts"] >= since.replace("+00:00", "Z")]
    else:
        backlog = backlog[-tail:] if tail else []
    with pod.log_lock:
        seen = len(pod.logs)
    handler.send_response(200)
    for k, v in (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"), ("Connection", "keep-alive"),
                 ("X-Accel-Buffering", "no"), ("Transfer-Encoding", "chunked")):
        handler.send_header(k, v)
    handler.end_headers()

    def send(entry: dict[str, str]) -> None:
        if entry["source"] not in ("container", "system"):
            fake.violations.append(f"log event source {entry['source']!r} is not a LogSource")
        event = f"id: {entry['ts']}\ndata: {json.dumps(entry)}\n\n".encode()
        handler.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
        handler.wfile.flush()

    try:
        for entry in backlog:
            send(entry)
        end = time.monotonic() + fake.sse_max_s
        while time.monotonic() < end:
            with fake.lock:
                fake.refresh()
                final = pod.status in ("EXITED", "ERROR", "TERMINATED")
            with pod.log_lock:
                fresh = wanted(pod.logs[seen:])
                seen = len(pod.logs)
            for entry in fresh:
                send(entry)
            if final and not fresh:
                break
            time.sleep(0.05)
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True
