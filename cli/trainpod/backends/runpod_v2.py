"""RunPod REST API v2 (``https://api.runpod.io/v2``): the typed client for on-demand pods.

Held to RunPod's published OpenAPI document ("Runpod REST API 2.0.0", synced 2026-08-18; the part we call is
vendored in ``tests/contract``, and the loopback fake validates every request and response against it).
Paths, parameters and field names below are the document's:

* pods: ``POST /v2/pods`` (``CreatePodRequest`` → 201 ``Pod``), ``GET /v2/pods/{id}``, ``GET /v2/pods``
  (``ListPodsResponse``; the document has no name filter, so the prefix is filtered here),
  ``POST /v2/pods/{id}/action`` (``PodActionRequest``: stop → 200 ``Pod``), ``DELETE /v2/pods/{id}`` (204);
* ``GET /v2/pods/{id}/logs``: server-sent events, ``source`` (container|system), ``tail`` (0..5000),
  ``Last-Event-ID`` (the event's ``ts``) to resume; each event's data is ``{source, line, ts}``;
* registries: ``GET/POST /v2/registries``, ``DELETE /v2/registries/{id}`` (400 while a pod uses it);
* ``GET /v2/catalog/gpus?include=AVAILABILITY&product=POD&count=&cloud=&minCudaVersion=``: prices and stock
  (``availability`` NONE/LOW/MEDIUM/HIGH, ``cudaVersions[].available``);
* ``GET /v2/billing/pods?podId=&bucketSize=&startTime=``: ``ListPodBillingResponse`` with totals.

Errors are RFC 9457 problem objects (``ErrorResponse``: title, status, detail, errors[]), handled as the
document's create-pod table says: 422 = the body does not match the contract (our bug: never retried, the
fields are reported); 400 = a rule violation *or* no capacity (no machine-readable code), so it is a
:class:`CapacityError` and the caller tries its next candidate; 402 = insufficient balance (stop); 403 = this
key may not (skip the candidate); 429 = wait ``Retry-After`` seconds, then resume; 5xx, timeouts and
dropped connections are retried with bounded backoff. A create is never blindly repeated: after an
ambiguous failure the pod list is searched for the unique name first, and a pod found is adopted.

Two transports: httpx for the CLI, and the standard library inside the pod (the image has no httpx).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import quote, urlencode

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from trainpod.backends.runpod_api import (
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    AuthError,
    CapacityError,
    ForbiddenError,
    GpuType,
    InsufficientBalanceError,
    InvalidRequestError,
    Pod,
    PodNotFoundError,
    PodRequest,
    RunPodAPIError,
    TransientAPIError,
)
from trainpod.redact import redact_text, register_secret, secret_values

PodStatus = Literal["PROVISIONING", "STARTING", "RUNNING", "EXITED", "ERROR", "TERMINATED"]
Availability = Literal["NONE", "LOW", "MEDIUM", "HIGH"]
STOCK_RANK = {"HIGH": 3, "MEDIUM": 2, "LOW": 1, "NONE": 0}
MAX_RETRY_AFTER_S = 120.0  # a Retry-After longer than this is not waited out: the call fails as transient


# ----------------------------------------------------------------------------------------- request models
class _Closed(BaseModel):
    """Request bodies are closed on RunPod (unknown fields are a 422): so are ours."""

    model_config = ConfigDict(extra="forbid")


class CreateGpuConfig(_Closed):
    id: str
    count: int = Field(1, ge=1)
    minCudaVersion: str | None = Field(None, pattern=r"^\d+\.\d+$")  # noqa: N815 - the API's name
    allowedCudaVersions: list[str] | None = None  # noqa: N815


class PersistentMount(_Closed):
    size: int = Field(ge=10)
    path: str


class Mounts(_Closed):
    persistent: PersistentMount | None = None


class CreatePodRequest(_Closed):
    name: str = Field(min_length=1)
    image: str
    gpu: CreateGpuConfig
    cloud: Literal["SECURE", "COMMUNITY"] = "SECURE"
    args: str | None = None
    disk: int | None = Field(None, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[str] | None = None
    registry: str | None = None
    mounts: Mounts | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ClusterCompute(_Closed):
    gpuTypeId: str = Field(min_length=1)  # noqa: N815 - the API's name
    gpuCountPerPod: int = Field(ge=1)  # noqa: N815
    podCount: int = Field(ge=2, le=250)  # noqa: N815


class CreateClusterRequest(_Closed):
    """``POST /v2/clusters``: one container config for every node. The document has no ``registry`` (private
    images are not supported for clusters yet), no ``cloud`` and no CUDA selection, unlike a pod."""

    name: str = Field(min_length=1)
    type: Literal["TRAINING"] = "TRAINING"
    compute: ClusterCompute
    image: str
    args: str | None = None
    disk: int | None = Field(None, ge=1)
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[str] | None = None
    dataCenterIds: list[str] | None = None  # noqa: N815

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class PodActionRequest(_Closed):
    action: Literal["start", "stop", "restart", "terminate"]


class CreateRegistryRequest(_Closed):
    name: str = Field(min_length=1)
    username: str = Field(min_length=1)
    password: SecretStr

    def body(self) -> dict[str, Any]:
        return {"name": self.name, "username": self.username, "password": self.password.get_secret_value()}


# ----------------------------------------------------------------------------------------- response models
class _Open(BaseModel):
    """Responses may grow fields: unknown ones are ignored (the contract tests keep the fake to the document)."""

    model_config = ConfigDict(extra="ignore")


class Problem(_Open):
    title: str = ""
    status: int = 0
    detail: str = ""
    errors: list[str] = Field(default_factory=list)


class GpuConfig(_Open):
    id: str
    count: int = 1


class PodRuntime(_Open):
    uptime: int | None = None


class PodCluster(_Open):
    """``Pod.cluster``: the pod's membership (``rank`` null until assigned)."""

    id: str
    rank: int | None = None
    ip: str | None = None


class V2Pod(_Open):
    id: str
    name: str
    status: PodStatus
    image: str = ""
    gpu: GpuConfig | None = None
    cost: float = 0.0
    runtime: PodRuntime | None = None
    registry: str | None = None
    cudaVersion: str | None = None  # noqa: N815
    createdAt: str = ""  # noqa: N815
    startedAt: str | None = None  # noqa: N815
    cluster: PodCluster | None = None

    def to_pod(self) -> Pod:
        uptime = self.runtime.uptime if self.status == "RUNNING" and self.runtime is not None else None
        return Pod(id=self.id, name=self.name, desired_status=self.status, image=self.image,
                   gpu_count=self.gpu.count if self.gpu else 0, cost_per_hr=self.cost or None,
                   uptime_seconds=uptime if uptime is not None else (0 if self.status == "RUNNING" else None),
                   last_status_change=self.startedAt or self.createdAt, gpu_type_id=self.gpu.id if self.gpu else "",
                   registry_id=self.registry, created_at=self.createdAt)


class ListPodsResponse(_Open):
    pods: list[V2Pod]


class ClusterPodsSummary(_Open):
    total: int
    byStatus: dict[str, int] = Field(default_factory=dict)  # noqa: N815


class ClusterPrimary(_Open):
    podId: str  # noqa: N815
    status: PodStatus


class Cluster(_Open):
    id: str
    name: str
    type: str
    compute: ClusterCompute
    pods: ClusterPodsSummary
    createdAt: str = ""  # noqa: N815
    primary: ClusterPrimary | None = None


class ListClustersResponse(_Open):
    clusters: list[Cluster]


@dataclass(frozen=True)
class ClusterNode:
    """A member pod of a cluster: its node rank (None until assigned) and the pod as the client knows pods."""

    rank: int | None
    pod: Pod


class Price(_Open):
    secure: float
    community: float


class CudaVersionAvailability(_Open):
    version: str
    available: bool


class V2GpuType(_Open):
    id: str
    name: str
    memory: int
    secure: bool
    community: bool
    price: Price
    availability: Availability | None = None
    cudaVersions: list[CudaVersionAvailability] = Field(default_factory=list)  # noqa: N815

    def to_gpu_type(self) -> GpuType:
        return GpuType(id=self.id, display_name=self.name, memory_gb=self.memory,
                       secure_price=self.price.secure if self.secure and self.price.secure else None,
                       community_price=self.price.community if self.community and self.price.community else None)

    @property
    def in_stock(self) -> bool:
        return self.availability not in (None, "NONE") and any(c.available for c in self.cudaVersions)


class ListGpuTypesResponse(_Open):
    gpus: list[V2GpuType]


class Registry(_Open):
    id: str
    name: str


class ListRegistriesResponse(_Open):
    registries: list[Registry]


class PodBillingAmounts(_Open):
    totalAmount: float  # noqa: N815
    gpuAmount: float = 0.0  # noqa: N815
    cpuAmount: float = 0.0  # noqa: N815
    diskAmount: float = 0.0  # noqa: N815


class PodBillingRecord(PodBillingAmounts):
    podId: str  # noqa: N815
    startTime: str  # noqa: N815
    endTime: str  # noqa: N815


class PodBillingMetadata(_Open):
    recordCount: int  # noqa: N815
    totals: PodBillingAmounts


class ListPodBillingResponse(_Open):
    records: list[PodBillingRecord]
    metadata: PodBillingMetadata


@dataclass(frozen=True)
class LogEvent:
    """One server-sent event of ``GET /v2/pods/{id}/logs``: ``id`` is the resume cursor (the event's ts)."""

    id: str
    source: str
    line: str
    ts: str


@dataclass(frozen=True)
class Stock:
    """A GPU type's pod stock for one cloud, GPU count and CUDA floor (from the catalog)."""

    gpu_type_id: str
    cloud: str
    availability: str  # NONE/LOW/MEDIUM/HIGH, or "UNLISTED" when the catalog does not list the type
    cuda_available: tuple[str, ...]  # CUDA versions >= the floor with free capacity now

    @property
    def in_stock(self) -> bool:
        return self.availability in ("LOW", "MEDIUM", "HIGH") and bool(self.cuda_available)


# ----------------------------------------------------------------------------------------- transports
@dataclass(frozen=True)
class HTTPResponse:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes


class Transport(Protocol):
    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float) -> HTTPResponse:
        """One HTTP exchange; connection failures and timeouts raise :class:`TransientAPIError`."""

    def stream_lines(self, url: str, headers: Mapping[str, str], timeout: float
                     ) -> tuple[HTTPResponse, Iterator[str]]:
        """A GET whose body is read line by line as it arrives (server-sent events)."""


class HttpxTransport:
    """The CLI's transport (httpx, imported on first use)."""

    def __init__(self) -> None:
        import httpx

        self._httpx = httpx
        self._client = httpx.Client(follow_redirects=False)

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float) -> HTTPResponse:
        httpx = self._httpx
        try:
            r = self._client.request(method, url, headers=dict(headers), content=body, timeout=timeout)
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise TransientAPIError(f"no answer from RunPod ({type(exc).__name__})") from None
        return HTTPResponse(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

    def stream_lines(self, url: str, headers: Mapping[str, str], timeout: float
                     ) -> tuple[HTTPResponse, Iterator[str]]:
        httpx = self._httpx
        cm = self._client.stream("GET", url, headers=dict(headers),
                                 timeout=httpx.Timeout(timeout, read=timeout))
        try:
            r = cm.__enter__()
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            raise TransientAPIError(f"no answer from RunPod ({type(exc).__name__})") from None
        head = HTTPResponse(r.status_code, {k.lower(): v for k, v in r.headers.items()}, b"")
        if r.status_code != 200:
            body = r.read()
            cm.__exit__(None, None, None)
            return HTTPResponse(r.status_code, head.headers, body), iter(())

        def lines() -> Iterator[str]:
            try:
                yield from r.iter_lines()
            except (httpx.TimeoutException, httpx.TransportError):
                return  # the stream broke: the caller resumes with Last-Event-ID
            finally:
                cm.__exit__(None, None, None)

        return head, lines()


class UrllibTransport:
    """The standard library's HTTP, for inside the pod (no httpx in the image)."""

    def request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None,
                timeout: float) -> HTTPResponse:
        import urllib.error
        import urllib.request

        req = urllib.request.Request(url, data=body, headers=dict(headers), method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return HTTPResponse(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
        except urllib.error.HTTPError as exc:
            return HTTPResponse(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise TransientAPIError(f"no answer from RunPod ({type(exc).__name__})") from None

    def stream_lines(self, url: str, headers: Mapping[str, str], timeout: float
                     ) -> tuple[HTTPResponse, Iterator[str]]:
        raise RunPodAPIError("log streaming is not available inside the pod")


# ----------------------------------------------------------------------------------------- client
class V2Client:
    """:class:`trainpod.backends.runpod_api.RunPodAPI` over RunPod REST v2, plus catalog stock, registry
    credentials, logs (SSE) and billing."""

    api = "v2"

    def __init__(
        self,
        api_key: SecretStr | str,
        *,
        base_url: str | None = None,
        retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 20.0,
        timeout_s: float = 30.0,
        transport: Transport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise AuthError("no RunPod API key",
                            "export RUNPOD_API_KEY (create one at https://www.runpod.io/console/user/settings)")
        register_secret(key)
        self._key = key
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.retries = max(1, retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self._transport = transport
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> V2Client:
        if settings.runpod_api_key is None:
            raise AuthError("no RunPod API key", "export RUNPOD_API_KEY")
        return cls(settings.runpod_api_key, base_url=settings.runpod_api_base_url, **kwargs)

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = HttpxTransport()
        return self._transport

    # ------------------------------------------------------------------ pods
    def deploy(self, request: PodRequest) -> Pod:
        """``POST /v2/pods``. After a lost reply (5xx, timeout, dropped connection) the pod list is searched for
        the request's unique name before the create is sent again, so a lost reply never rents a second pod."""
        if request.spot:
            raise RunPodAPIError("REST v2 has no spot pods", "spot runs go through the legacy GraphQL client")
        body = CreatePodRequest.model_validate(request.v2_body()).body()
        what = f"create pod {request.name} ({request.gpu_count}x {request.gpu_type_id}, {request.cloud_type})"
        last: RunPodAPIError | None = None
        for attempt in range(self.retries):
            try:
                data = self._call(what, "POST", "/v2/pods", body=body, retry=False)
            except TransientAPIError as exc:
                last = exc
                existing = [p for p in self.pods(name_prefix=request.name) if p.name == request.name]
                if existing:
                    return existing[0]
                self._backoff(attempt)
                continue
            return self._parse(what, V2Pod, data).to_pod()
        assert last is not None
        raise last

    def pod(self, pod_id: str) -> Pod | None:
        try:
            data = self._call(f"get pod {pod_id}", "GET", f"/v2/pods/{quote(pod_id, safe='')}")
        except PodNotFoundError:
            return None
        return self._parse(f"get pod {pod_id}", V2Pod, data).to_pod()

    def pods(self, name_prefix: str | None = None) -> list[Pod]:
        data = self._call("list pods", "GET", "/v2/pods")
        pods = [p.to_pod() for p in self._parse("list pods", ListPodsResponse, data).pods]
        return [p for p in pods if p.desired_status != "TERMINATED"
                and (name_prefix is None or p.name.startswith(name_prefix))]

    def stop(self, pod_id: str) -> None:
        """``POST /v2/pods/{id}/action`` stop: GPU released, disk kept (no GPU billing). A pod that is already
        not running (409) is left as it is."""
        try:
            self._call(f"stop pod {pod_id}", "POST", f"/v2/pods/{quote(pod_id, safe='')}/action",
                       body=PodActionRequest(action="stop").model_dump())
        except _Conflict:
            return

    def terminate(self, pod_id: str) -> None:
        """``DELETE /v2/pods/{id}``; a pod that is already gone (404) is not an error."""
        try:
            self._call(f"terminate pod {pod_id}", "DELETE", f"/v2/pods/{quote(pod_id, safe='')}")
        except PodNotFoundError:
            return

    # ------------------------------------------------------------------ clusters
    def create_cluster(self, request: CreateClusterRequest) -> Cluster:
        """``POST /v2/clusters`` (201 ``Cluster``). After a lost reply the cluster list is searched for the
        request's unique name before the create is sent again, so a lost reply never rents a second cluster."""
        body = request.body()
        c = request.compute
        what = f"create cluster {request.name} ({c.podCount} nodes x {c.gpuCountPerPod} {c.gpuTypeId})"
        last: RunPodAPIError | None = None
        for attempt in range(self.retries):
            try:
                data = self._call(what, "POST", "/v2/clusters", body=body, retry=False)
            except TransientAPIError as exc:
                last = exc
                existing = [k for k in self.clusters() if k.name == request.name]
                if existing:
                    return existing[0]
                self._backoff(attempt)
                continue
            return self._parse(what, Cluster, data)
        assert last is not None
        raise last

    def cluster(self, cluster_id: str) -> Cluster | None:
        """``GET /v2/clusters/{id}``; None once it is gone (404)."""
        what = f"get cluster {cluster_id}"
        try:
            data = self._call(what, "GET", f"/v2/clusters/{quote(cluster_id, safe='')}")
        except PodNotFoundError:
            return None
        return self._parse(what, Cluster, data)

    def clusters(self, name_prefix: str | None = None) -> list[Cluster]:
        """``GET /v2/clusters`` (the document has no name filter: the prefix is applied here)."""
        data = self._call("list clusters", "GET", "/v2/clusters")
        found = self._parse("list clusters", ListClustersResponse, data).clusters
        return [k for k in found if name_prefix is None or k.name.startswith(name_prefix)]

    def cluster_pods(self, cluster_id: str) -> list[ClusterNode]:
        """``GET /v2/clusters/{id}/pods``: the member pods, by node rank (unranked last); [] once it is gone."""
        what = f"pods of cluster {cluster_id}"
        try:
            data = self._call(what, "GET", f"/v2/clusters/{quote(cluster_id, safe='')}/pods")
        except PodNotFoundError:
            return []
        pods = self._parse(what, ListPodsResponse, data).pods
        nodes = [ClusterNode(p.cluster.rank if p.cluster else None, p.to_pod()) for p in pods]
        return sorted(nodes, key=lambda n: (n.rank is None, n.rank or 0))

    def pod_cluster(self, pod_id: str) -> PodCluster | None:
        """The cluster membership of a pod (``Pod.cluster`` of ``GET /v2/pods/{id}``); None for a standalone pod.
        A pod reads its own with its pod-scoped key: that is how a node learns which cluster to delete."""
        what = f"get pod {pod_id}"
        try:
            data = self._call(what, "GET", f"/v2/pods/{quote(pod_id, safe='')}")
        except PodNotFoundError:
            return None
        return self._parse(what, V2Pod, data).cluster

    def delete_cluster(self, cluster_id: str) -> None:
        """``DELETE /v2/clusters/{id}``: the cluster and all its member pods. Already gone (404) is fine."""
        try:
            self._call(f"delete cluster {cluster_id}", "DELETE", f"/v2/clusters/{quote(cluster_id, safe='')}")
        except PodNotFoundError:
            return

    # ------------------------------------------------------------------ catalog
    def gpu_types(self) -> list[GpuType]:
        data = self._call("gpu catalog", "GET", "/v2/catalog/gpus")
        return [g.to_gpu_type() for g in self._parse("gpu catalog", ListGpuTypesResponse, data).gpus]

    def stock(self, gpu_type_ids: list[str], cloud: str, gpu_count: int, min_cuda: str | None) -> list[Stock]:
        """Pod stock of each GPU type for ``cloud``/``gpu_count``, counting only CUDA versions >= ``min_cuda``."""
        query: dict[str, str] = {"include": "AVAILABILITY", "product": "POD", "count": str(gpu_count),
                                 "cloud": cloud}
        if min_cuda:
            query["minCudaVersion"] = min_cuda
        data = self._call("gpu catalog (availability)", "GET", "/v2/catalog/gpus", query=query)
        listed = {g.id: g for g in self._parse("gpu catalog", ListGpuTypesResponse, data).gpus}
        out = []
        for gid in gpu_type_ids:
            g = listed.get(gid)
            if g is None:
                out.append(Stock(gid, cloud, "UNLISTED", ()))
                continue
            versions = tuple(c.version for c in g.cudaVersions if c.available
                             and (not min_cuda or _cuda(c.version) >= _cuda(min_cuda)))
            out.append(Stock(gid, cloud, g.availability or "NONE", versions))
        return out

    # ------------------------------------------------------------------ registries
    def save_registry_auth(self, name: str, username: str, password: SecretStr) -> str:
        """The id of the credential called ``name``: an existing one is reused (RunPod's credentials are
        write-only, so it cannot be compared), else it is created. One per registry+user, never per launch."""
        register_secret(password.get_secret_value())
        for reg in self.registries():
            if reg.name == name:
                return reg.id
        body = CreateRegistryRequest(name=name, username=username, password=password).body()
        data = self._call(f"create registry credential {name!r}", "POST", "/v2/registries", body=body)
        return self._parse("create registry credential", Registry, data).id

    def registries(self) -> list[Registry]:
        data = self._call("list registry credentials", "GET", "/v2/registries")
        return self._parse("list registry credentials", ListRegistriesResponse, data).registries

    def delete_registry(self, registry_id: str) -> bool:
        """Delete a credential; False when RunPod keeps it because a pod still pulls with it (400)."""
        try:
            self._call(f"delete registry credential {registry_id}", "DELETE",
                       f"/v2/registries/{quote(registry_id, safe='')}")
        except PodNotFoundError:
            return True
        except CapacityError:  # the 400 of this operation: "in use by a pod"
            return False
        return True

    # ------------------------------------------------------------------ billing
    def pod_cost(self, pod_id: str, since: str | None = None) -> float | None:
        """What RunPod billed for the pod (``metadata.totals.totalAmount``), hourly buckets from ``since``
        (RFC 3339; the document's default window is the last 30 days); None when it has no record yet."""
        query = {"podId": pod_id, "bucketSize": "hour"}
        if since:
            query["startTime"] = since
        data = self._call(f"billing of pod {pod_id}", "GET", "/v2/billing/pods", query=query)
        bill = self._parse("pod billing", ListPodBillingResponse, data)
        return round(bill.metadata.totals.totalAmount, 6) if bill.records else None

    # ------------------------------------------------------------------ logs
    def logs(self, pod_id: str, *, source: str | None = None, tail: int = 100,
             last_event_id: str | None = None, timeout_s: float = 60.0) -> Iterator[LogEvent]:
        """The pod's log as server-sent events until the server ends the stream (or it breaks); resume with
        the last event's ``id`` as ``last_event_id``."""
        query: dict[str, str] = {"tail": str(max(0, min(5000, tail)))}
        if source:
            query["source"] = source
        headers = {**self._headers(), "Accept": "text/event-stream"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        url = self._url(f"/v2/pods/{quote(pod_id, safe='')}/logs", query)
        head, lines = self.transport.stream_lines(url, headers, timeout_s)
        if head.status != 200:
            raise self._error(f"logs of pod {pod_id}", head)
        yield from parse_sse(lines)

    # ------------------------------------------------------------------ plumbing
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}", "Accept": "application/json",
                "User-Agent": "trainpod"}

    def _url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        return self.base_url + path + ("?" + urlencode(query) if query else "")

    def _call(self, what: str, method: str, path: str, *, body: Any = None, query: Mapping[str, str] | None = None,
              retry: bool = True) -> Any:
        """One API call: JSON in, JSON (or None for 204) out. 429 waits ``Retry-After`` and resends (the
        request was not processed); 5xx/timeouts are retried when ``retry`` (never for a create)."""
        headers = self._headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        url = self._url(path, query)
        for attempt in range(self.retries):
            try:
                r = self.transport.request(method, url, headers, data, self.timeout_s)
            except TransientAPIError as exc:
                if not retry or attempt + 1 >= self.retries:
                    raise TransientAPIError(f"{what}: {exc.message}", "RunPod may be degraded; retry later") from None
                self._backoff(attempt)
                continue
            if 200 <= r.status < 300:
                if r.status == 204 or not r.body:
                    return None
                try:
                    return json.loads(r.body)
                except ValueError:
                    raise TransientAPIError(f"{what}: RunPod answered {r.status} with a non-JSON body") from None
            if r.status == 429:
                wait = _retry_after(r.headers.get("retry-after"))
                if attempt + 1 >= self.retries or wait > MAX_RETRY_AFTER_S:
                    raise TransientAPIError(f"{what}: rate limited by RunPod (429, Retry-After {wait:g}s)",
                                            "wait a minute and retry")
                self._sleep(wait)
                continue
            if r.status >= 500:
                if not retry or attempt + 1 >= self.retries:
                    raise TransientAPIError(f"{what}: RunPod answered HTTP {r.status}",
                                            "RunPod may be degraded; retry later")
                self._backoff(attempt)
                continue
            raise self._error(what, r)
        raise AssertionError("unreachable")

    def _error(self, what: str, r: HTTPResponse) -> RunPodAPIError:
        problem = _problem(r)
        detail = self._redact(problem.detail or problem.title or f"HTTP {r.status}")
        msg = f"{what}: {detail}"
        if r.status == 401:
            return AuthError(f"{what}: RunPod refused the API key", "check RUNPOD_API_KEY")
        if r.status == 402:
            return InsufficientBalanceError(msg, "add funds to the RunPod account; no other GPU type will help")
        if r.status == 403:
            return ForbiddenError(msg, "the API key may not do this (a pod-scoped or restricted key?)")
        if r.status == 404:
            return PodNotFoundError(msg)
        if r.status == 409:
            return _Conflict(msg)
        if r.status == 422:
            fields = "; ".join(self._redact(e) for e in problem.errors) or detail
            return InvalidRequestError(f"{what}: RunPod rejected trainpod's request as invalid: {fields}",
                                       "this is a trainpod bug (its request does not match RunPod's API); "
                                       "please report it with this message")
        if r.status == 400:
            return CapacityError(msg, "no capacity for this GPU type/cloud, or a rule of RunPod's was broken")
        return RunPodAPIError(msg)

    def _parse(self, what: str, model: type[BaseModel], data: Any) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RunPodAPIError(f"{what}: unexpected answer from RunPod ({where}: {first['msg']})") from None

    def _redact(self, text: str) -> str:
        return redact_text(text, secret_values() | {self._key})

    def _backoff(self, attempt: int) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        self._sleep(delay * (0.5 + random.random() / 2))


class _Conflict(RunPodAPIError):
    """409: the action is not valid for the pod's current status."""


def _problem(r: HTTPResponse) -> Problem:
    try:
        return Problem.model_validate(json.loads(r.body))
    except (ValueError, ValidationError):
        return Problem(status=r.status, detail=f"HTTP {r.status}")


def _retry_after(value: str | None) -> float:
    """``Retry-After`` is integer seconds on this API (the document); a missing/odd value waits 5 s."""
    try:
        return max(0.0, float(int(value or "")))
    except ValueError:
        return 5.0


def _cuda(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def parse_sse(lines: Iterator[str]) -> Iterator[LogEvent]:
    """Server-sent events (``id:``/``data:`` fields, blank line ends an event) → :class:`LogEvent`."""
    event_id, data = "", []
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    payload = {"source": "container", "line": "\n".join(data), "ts": event_id}
                if isinstance(payload, dict):
                    yield LogEvent(id=event_id or str(payload.get("ts", "")), source=str(payload.get("source", "")),
                                   line=str(payload.get("line", "")), ts=str(payload.get("ts", "")))
            event_id, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
