"""The legacy GraphQL RunPod client and the interface both RunPod clients implement.

REST v2 (:mod:`trainpod.backends.runpod_v2`) is the supported API and carries on-demand pods; this GraphQL
client remains for spot pods (``podRentInterruptable``: v2 has none) and as the pod's fallback for
self-termination, until RunPod retires GraphQL (early 2027).

Why it exists instead of calling ``runpod.create_pod`` & co.: the SDK pastes values into GraphQL
strings unescaped (a quote or newline in an env value breaks or *changes* the mutation) and its
``QueryError`` carries the whole query, env values and all (runpod-python PR #319). So we write our
own documents, render every value with :func:`gql_literal` (JSON string escaping, which is exactly
GraphQL's), send them through the SDK's transport (``runpod.api.graphql.run_graphql_query``: it
honours ``RUNPOD_API_BASE_URL`` and sends ``Authorization: Bearer KEY``), and turn every SDK or HTTP
failure into a :class:`RunPodAPIError` whose text is redacted and never contains the document.

The SDK transport only posts ``{"query": ...}`` (no GraphQL variables), hides the HTTP status and
has a fixed 30 s timeout; failures are therefore classified by exception type and message:
connection errors, timeouts and non-JSON bodies (a 5xx page from the edge) are transient and
retried with bounded backoff; capacity messages raise :class:`CapacityError`; "not found" raises
:class:`PodNotFoundError`. Deploys are not blindly retried: after an ambiguous failure the pod list
is checked for a pod with the same (unique) name before trying again, so a lost response never
rents a second GPU.

:class:`RunPodAPI` is the small interface the backend and the pod-side supervisor use, so this
GraphQL client can be replaced by RunPod's REST v2 API without touching them.

Taken from the runpod SDK 1.12 source: the endpoint (``$RUNPOD_API_BASE_URL/graphql``), the Bearer
header, the 401 → AuthenticationError mapping, the names ``podFindAndDeployOnDemand``, ``podStop``,
``podTerminate``, ``saveRegistryAuth``, ``gpuTypes`` price fields and ``myself { pods }``. From
SkyPilot and docs.runpod.io: ``podRentInterruptable``/``bidPerGpu``, ``allowedCudaVersions``,
``containerRegistryAuthId``, ``runtime { uptimeInSeconds }``. Assumptions still to check against
the real service: the capacity/not-found message texts, that ``pod`` reads ``null`` for an unknown
id, that ``podTerminate`` on a gone pod errors with "not found", and the exact CUDA version list.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import SecretStr

from trainpod.errors import TrainpodError
from trainpod.redact import redact_text, register_secret, secret_values

CloudType = Literal["ALL", "SECURE", "COMMUNITY"]
DEFAULT_BASE_URL = "https://api.runpod.io"
BASE_URL_ENV = "RUNPOD_API_BASE_URL"  # read by the SDK at every call

# Messages RunPod returns when no machine matches (seen in the SDK's issue tracker and dstack/SkyPilot).
_CAPACITY = re.compile(
    r"no longer any instances available|no instances? (are )?available|not enough (free )?gpus"
    r"|out of capacity|insufficient capacity|could not find any pods with required specifications",
    re.IGNORECASE,
)
_NOT_FOUND = re.compile(r"not found|does not exist|no pod with", re.IGNORECASE)
_TRANSIENT = re.compile(
    r"internal server error|try again later|temporarily unavailable|rate limit|too many requests"
    r"|bad gateway|gateway time-?out|service unavailable",
    re.IGNORECASE,
)
_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")


# ----------------------------------------------------------------------------------------- errors
class RunPodAPIError(TrainpodError):
    """A RunPod API call failed. The message is redacted and never contains the GraphQL document."""


class CapacityError(RunPodAPIError):
    """No machine with the requested GPU type / cloud is free right now (try a fallback)."""


class PodNotFoundError(RunPodAPIError):
    """The pod does not exist (any more)."""


class TransientAPIError(RunPodAPIError):
    """5xx, timeout or dropped connection that persisted through every retry."""


class AuthError(RunPodAPIError):
    """The API key was refused."""


class ForbiddenError(RunPodAPIError):
    """The key is valid but may not do this (v2 403; e.g. a pod-scoped key, or a pool the account cannot use)."""


class InsufficientBalanceError(RunPodAPIError):
    """RunPod refused to rent for lack of balance (v2 402): no other GPU type will do better."""


class InvalidRequestError(RunPodAPIError):
    """RunPod says trainpod's request does not match its contract (v2 422): a trainpod bug, never retried."""


# ----------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class GpuType:
    """One GPU type and its current prices (USD per GPU-hour; None where RunPod offers none)."""

    id: str
    display_name: str
    memory_gb: int
    secure_price: float | None = None
    community_price: float | None = None
    secure_spot_price: float | None = None
    community_spot_price: float | None = None

    def price(self, cloud: CloudType, spot: bool = False) -> float | None:
        """The price we would pay: for ALL, the cheaper of the two clouds that offer it."""
        secure = self.secure_spot_price if spot else self.secure_price
        community = self.community_spot_price if spot else self.community_price
        if cloud == "SECURE":
            return secure or None
        if cloud == "COMMUNITY":
            return community or None
        offered = [p for p in (secure, community) if p]
        return min(offered) if offered else None


@dataclass(frozen=True)
class Pod:
    """What we read back about a pod. Env is never requested: it would carry secrets."""

    id: str
    name: str
    desired_status: str  # RUNNING, EXITED, TERMINATED...
    image: str = ""
    gpu_count: int = 0
    cost_per_hr: float | None = None
    uptime_seconds: int | None = None  # None while the container has not started
    last_status_change: str = ""
    gpu_type_id: str = ""
    registry_id: str | None = None  # v2: the registry credential the pod pulls with
    created_at: str = ""

    @property
    def failed(self) -> bool:
        """v2 ERROR: the container is in an unrecoverable state (e.g. its image could not be pulled)."""
        return self.desired_status == "ERROR"

    @property
    def started(self) -> bool:
        return self.uptime_seconds is not None


@dataclass(frozen=True)
class PodRequest:
    """Everything needed to rent one pod. ``bid_per_gpu`` set = spot (interruptable)."""

    name: str
    image: str
    gpu_type_id: str
    gpu_count: int = 1
    cloud_type: CloudType = "ALL"
    container_disk_gb: int = 30
    volume_gb: int = 0
    volume_mount_path: str = "/workspace"
    ports: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    docker_args: str = ""
    allowed_cuda_versions: Sequence[str] = ()
    container_registry_auth_id: str | None = None
    bid_per_gpu: float | None = None
    min_vcpu_count: int | None = None
    min_memory_gb: int | None = None
    min_cuda_version: str | None = None  # v2 gpu.minCudaVersion (a floor); GraphQL needs the exact list
    terminate_after: str | None = None  # GraphQL only: a provider-side deadline (ISO 8601 UTC); v2 has none

    @property
    def spot(self) -> bool:
        return self.bid_per_gpu is not None

    @property
    def mutation(self) -> str:
        return "podRentInterruptable" if self.spot else "podFindAndDeployOnDemand"

    def graphql_input(self) -> dict[str, Any]:
        """The ``input`` object of the deploy mutation (GraphQL field names, values unrendered)."""
        out: dict[str, Any] = {
            "name": self.name,
            "imageName": self.image,
            "gpuTypeId": self.gpu_type_id,
            "gpuCount": self.gpu_count,
            "cloudType": Enum(self.cloud_type),
            "containerDiskInGb": self.container_disk_gb,
            "volumeInGb": self.volume_gb,
            "volumeMountPath": self.volume_mount_path,
            "ports": self.ports,
            "dockerArgs": self.docker_args,
            "startSsh": False,  # the job path never depends on SSH
            "supportPublicIp": False,
            "env": [{"key": k, "value": v} for k, v in self.env.items()],
        }
        if self.allowed_cuda_versions:
            out["allowedCudaVersions"] = list(self.allowed_cuda_versions)
        if self.container_registry_auth_id:
            out["containerRegistryAuthId"] = self.container_registry_auth_id
        if self.min_vcpu_count is not None:
            out["minVcpuCount"] = self.min_vcpu_count
        if self.min_memory_gb is not None:
            out["minMemoryInGb"] = self.min_memory_gb
        if self.terminate_after:
            out["terminateAfter"] = self.terminate_after
        if self.spot:
            out["bidPerGpu"] = self.bid_per_gpu
        return out

    def v2_body(self) -> dict[str, Any]:
        """The ``CreatePodRequest`` body of ``POST /v2/pods`` (field names from RunPod's OpenAPI document)."""
        if self.cloud_type not in ("SECURE", "COMMUNITY"):
            raise TrainpodError(f"REST v2 pods are SECURE or COMMUNITY, not {self.cloud_type!r}",
                                "the plan expands ALL into one attempt per cloud")
        gpu: dict[str, Any] = {"id": self.gpu_type_id, "count": self.gpu_count}
        if self.min_cuda_version:
            gpu["minCudaVersion"] = self.min_cuda_version
        elif self.allowed_cuda_versions:
            gpu["allowedCudaVersions"] = list(self.allowed_cuda_versions)
        body: dict[str, Any] = {"name": self.name, "image": self.image, "cloud": self.cloud_type, "gpu": gpu,
                                "disk": self.container_disk_gb, "env": dict(self.env)}
        if self.docker_args:
            body["args"] = self.docker_args
        if self.ports:
            body["ports"] = [p.strip() for p in self.ports.split(",") if p.strip()]
        if self.volume_gb:
            body["mounts"] = {"persistent": {"size": self.volume_gb, "path": self.volume_mount_path}}
        if self.container_registry_auth_id:
            body["registry"] = self.container_registry_auth_id
        return body

    def document(self, secret_names: Sequence[str] = ()) -> str:
        """The deploy mutation; ``secret_names`` are shown as ``***`` (for ``--dry-run``)."""
        data = self.graphql_input()
        if secret_names:
            hidden = set(secret_names)
            data["env"] = [
                {"key": e["key"], "value": "***" if e["key"] in hidden else e["value"]} for e in data["env"]
            ]
        return f"mutation {{ {self.mutation}(input: {gql_literal(data)}) {{ {_POD_FIELDS} }} }}"


# ----------------------------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class Enum:
    """A GraphQL enum value (rendered bare, e.g. ``SECURE``), checked to be a plain name."""

    value: str


def gql_literal(value: Any) -> str:
    """Render a Python value as a GraphQL input literal that cannot escape its position.

    Strings use JSON escaping, which is exactly GraphQL's string escaping (``\\"``, ``\\\\``,
    ``\\n``, ``\\uXXXX`` for control characters); non-ASCII is kept as UTF-8. Lone surrogates
    (undecodable bytes smuggled into ``os.environ``) cannot be sent and are refused.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        if not _NAME.match(value.value) or value.value in ("true", "false", "null"):
            raise TrainpodError(f"invalid GraphQL enum value {value.value!r}")
        return value.value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TrainpodError(f"cannot send non-finite number {value!r} to RunPod")
        return repr(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise TrainpodError(
                "a value for RunPod contains characters that are not valid Unicode (lone surrogates)",
                "check the environment variables and settings passed to the pod for undecodable bytes",
            ) from None
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        parts = []
        for k, v in value.items():
            if not isinstance(k, str) or not _NAME.match(k):
                raise TrainpodError(f"invalid GraphQL field name {k!r}")
            parts.append(f"{k}: {gql_literal(v)}")
        return "{" + ", ".join(parts) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(gql_literal(v) for v in value) + "]"
    raise TrainpodError(f"cannot render {type(value).__name__} as a GraphQL value")


_POD_FIELDS = "id name desiredStatus imageName gpuCount costPerHr lastStatusChange runtime { uptimeInSeconds }"
_GPU_FIELDS = (
    "id displayName memoryInGb securePrice communityPrice secureSpotPrice communitySpotPrice"
)


# ----------------------------------------------------------------------------------------- interface
class RunPodAPI(Protocol):
    """What trainpod needs from RunPod: :class:`trainpod.backends.runpod_v2.V2Client` (REST v2, the supported
    API) for on-demand pods and every read; :class:`GraphQLClient` (the legacy API, retired early 2027) for
    spot pods, which v2 does not offer."""

    def gpu_types(self) -> list[GpuType]: ...

    def deploy(self, request: PodRequest) -> Pod:
        """Rent a pod (on-demand, or spot when ``request.bid_per_gpu`` is set)."""

    def pod(self, pod_id: str) -> Pod | None:
        """The pod, or None when RunPod does not know it (terminated long ago)."""

    def pods(self, name_prefix: str | None = None) -> list[Pod]:
        """The account's pods that are not terminated (``name_prefix``: only those whose name starts so)."""

    def stop(self, pod_id: str) -> None: ...

    def terminate(self, pod_id: str) -> None:
        """Idempotent: a pod that is already gone is not an error."""

    def save_registry_auth(self, name: str, username: str, password: SecretStr) -> str:
        """Store registry credentials at RunPod; returns the ``containerRegistryAuthId``."""


Transport = Callable[[str, str], dict[str, Any]]  # (document, api key) -> decoded JSON response


class QueryFailed(Exception):
    """RunPod answered with GraphQL ``errors``: carries the first message only, never the document."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def sdk_transport(document: str, api_key: str) -> dict[str, Any]:
    """POST through the runpod SDK (imported here: it takes seconds and is only needed now).

    Its exceptions are translated at once: the SDK's ``QueryError`` holds the whole document.
    """
    import requests
    from runpod import error as sdk_error
    from runpod.api.graphql import run_graphql_query

    try:
        return run_graphql_query(document, api_key=api_key)
    except sdk_error.AuthenticationError:
        raise AuthError("RunPod refused the API key", "check RUNPOD_API_KEY") from None
    except sdk_error.QueryError as exc:
        raise QueryFailed(str(exc.message or "")) from None
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise TransientAPIError(f"no answer from RunPod ({type(exc).__name__})") from None
    except ValueError:  # requests' JSONDecodeError: an HTML 5xx page from the edge
        raise TransientAPIError("RunPod answered with a non-JSON body (a 5xx page)") from None
    except requests.RequestException as exc:
        raise RunPodAPIError(f"HTTP error ({type(exc).__name__})") from None


def urllib_transport(document: str, api_key: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The same wire format as the SDK with the standard library only: for inside the pod, where
    the image carries no runpod SDK. Unlike the SDK it sees the HTTP status, so 5xx is certain."""
    import urllib.error
    import urllib.request

    url = os.environ.get(BASE_URL_ENV, DEFAULT_BASE_URL).rstrip("/") + "/graphql"
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": document}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}",
                 "User-Agent": "trainpod-podside"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise AuthError("RunPod refused the API key", "check RUNPOD_API_KEY") from None
        if exc.code >= 500 or exc.code == 429:
            raise TransientAPIError(f"RunPod answered HTTP {exc.code}") from None
        body = exc.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise TransientAPIError(f"no answer from RunPod ({type(exc).__name__})") from None
    try:
        payload = json.loads(body)
    except ValueError:
        raise TransientAPIError("RunPod answered with a non-JSON body") from None
    if isinstance(payload, dict) and payload.get("errors"):
        first = payload["errors"][0]
        raise QueryFailed(str(first.get("message", "")) if isinstance(first, dict) else str(first))
    return payload


class GraphQLClient:
    """:class:`RunPodAPI` over RunPod's GraphQL endpoint, via the SDK's transport."""

    def __init__(
        self,
        api_key: SecretStr | str,
        *,
        retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 20.0,
        transport: Transport = sdk_transport,
        sleep: Callable[[float], None] = time.sleep,
    ):
        key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not key:
            raise AuthError(
                "no RunPod API key",
                "export RUNPOD_API_KEY (create one at https://www.runpod.io/console/user/settings)",
            )
        register_secret(key)  # any echo of it in an error or log becomes ***
        self._key = key
        self.retries = max(1, retries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._transport = transport
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> GraphQLClient:
        """Build from :class:`trainpod.settings.Settings`; exports its base URL for the SDK."""
        if settings.runpod_api_base_url:
            os.environ[BASE_URL_ENV] = settings.runpod_api_base_url.rstrip("/")
        if settings.runpod_api_key is None:
            raise AuthError("no RunPod API key", "export RUNPOD_API_KEY")
        return cls(settings.runpod_api_key, **kwargs)

    # ------------------------------------------------------------------ calls
    def gpu_types(self) -> list[GpuType]:
        data = self._call("gpu types", f"query GpuTypes {{ gpuTypes {{ {_GPU_FIELDS} }} }}")
        return [_gpu(g) for g in data.get("gpuTypes") or []]

    def deploy(self, request: PodRequest) -> Pod:
        what = f"deploy {request.gpu_count}x {request.gpu_type_id} ({request.cloud_type}{', spot' if request.spot else ''})"
        doc = request.document()
        last: RunPodAPIError | None = None
        for attempt in range(self.retries):
            try:
                data = self._call(what, doc, retry=False)
            except TransientAPIError as exc:
                last = exc
                # The request may have reached RunPod before the failure: adopt the pod rather than
                # renting a second one. Names carry the run id and attempt, so they are unique.
                existing = [p for p in self.pods() if p.name == request.name and p.desired_status != "TERMINATED"]
                if existing:
                    return existing[0]
                self._backoff(attempt)
                continue
            pod = data.get(request.mutation)
            if not pod:
                raise CapacityError(f"{what}: RunPod returned no pod", _capacity_hint(request))
            return _pod(pod)
        assert last is not None
        raise last

    def pod(self, pod_id: str) -> Pod | None:
        doc = f"query Pod {{ pod(input: {gql_literal({'podId': pod_id})}) {{ {_POD_FIELDS} }} }}"
        try:
            data = self._call(f"pod {pod_id}", doc)
        except PodNotFoundError:
            return None
        raw = data.get("pod")
        return _pod(raw) if raw else None

    def pods(self, name_prefix: str | None = None) -> list[Pod]:
        data = self._call("list pods", f"query Pods {{ myself {{ pods {{ {_POD_FIELDS} }} }} }}")
        pods = [_pod(p) for p in (data.get("myself") or {}).get("pods") or []]
        return [p for p in pods if name_prefix is None or p.name.startswith(name_prefix)]

    def stop(self, pod_id: str) -> None:
        doc = f"mutation {{ podStop(input: {gql_literal({'podId': pod_id})}) {{ id desiredStatus }} }}"
        self._call(f"stop pod {pod_id}", doc)

    def terminate(self, pod_id: str) -> None:
        doc = f"mutation {{ podTerminate(input: {gql_literal({'podId': pod_id})}) }}"
        try:
            self._call(f"terminate pod {pod_id}", doc)
        except PodNotFoundError:
            return

    def save_registry_auth(self, name: str, username: str, password: SecretStr) -> str:
        secret = password.get_secret_value()
        register_secret(secret)
        inp = gql_literal({"name": name, "username": username, "password": secret})
        data = self._call(f"save registry auth {name!r}", f"mutation {{ saveRegistryAuth(input: {inp}) {{ id name }} }}")
        auth = data.get("saveRegistryAuth") or {}
        if not auth.get("id"):
            raise RunPodAPIError(f"save registry auth {name!r}: RunPod returned no id")
        return str(auth["id"])

    # ------------------------------------------------------------------ transport + errors
    def _call(self, what: str, document: str, retry: bool = True) -> dict[str, Any]:
        """Send ``document``; return its ``data``. Retries transient failures when ``retry``."""
        attempts = self.retries if retry else 1
        for attempt in range(attempts):
            try:
                return self._once(what, document)
            except TransientAPIError:
                if attempt + 1 >= attempts:
                    raise
                self._backoff(attempt)
        raise AssertionError("unreachable")

    def _once(self, what: str, document: str) -> dict[str, Any]:
        try:
            response = self._transport(document, self._key)
        except QueryFailed as exc:
            raise self._classify(what, exc.message) from None
        except RunPodAPIError as exc:
            raise type(exc)(f"{what}: {self._redact(exc.message)}", exc.hint) from None
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict):
            raise TransientAPIError(f"{what}: RunPod answered without data")
        return data

    def _classify(self, what: str, message: str) -> RunPodAPIError:
        msg = f"{what}: {self._redact(message)}"
        if _CAPACITY.search(message):
            return CapacityError(msg, "try a fallback GPU type or cloud type, or spot, or retry later")
        if _NOT_FOUND.search(message):
            return PodNotFoundError(msg)
        if _TRANSIENT.search(message):
            return TransientAPIError(msg, "RunPod may be degraded; retry later")
        return RunPodAPIError(msg)

    def _redact(self, text: str) -> str:
        return redact_text(text, secret_values() | {self._key})

    def _backoff(self, attempt: int) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        self._sleep(delay * (0.5 + random.random() / 2))  # jitter: no thundering herd on recovery


def _capacity_hint(request: PodRequest) -> str:
    return f"no {request.gpu_type_id} free in {request.cloud_type} cloud; try a fallback GPU type or cloud"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _gpu(raw: Mapping[str, Any]) -> GpuType:
    return GpuType(
        id=str(raw["id"]),
        display_name=str(raw.get("displayName") or raw["id"]),
        memory_gb=int(raw.get("memoryInGb") or 0),
        secure_price=_num(raw.get("securePrice")),
        community_price=_num(raw.get("communityPrice")),
        secure_spot_price=_num(raw.get("secureSpotPrice")),
        community_spot_price=_num(raw.get("communitySpotPrice")),
    )


def _pod(raw: Mapping[str, Any]) -> Pod:
    runtime = raw.get("runtime") or {}
    uptime = runtime.get("uptimeInSeconds") if isinstance(runtime, Mapping) else None
    return Pod(
        id=str(raw["id"]),
        name=str(raw.get("name") or ""),
        desired_status=str(raw.get("desiredStatus") or "UNKNOWN"),
        image=str(raw.get("imageName") or ""),
        gpu_count=int(raw.get("gpuCount") or 0),
        cost_per_hr=_num(raw.get("costPerHr")),
        uptime_seconds=int(uptime) if isinstance(uptime, (int, float)) else None,
        last_status_change=str(raw.get("lastStatusChange") or ""),
    )
