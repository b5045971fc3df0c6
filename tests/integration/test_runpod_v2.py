"""The REST v2 client against the loopback fake, with RunPod's OpenAPI contract enforced on both sides.

Every request the client sends and every answer the fake gives is validated against the vendored document
(tests/contract); the ``runpod_server`` fixture fails a test that leaves a violation behind.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from tests.contract.openapi import Contract
from trainpod.backends.runpod_api import (
    AuthError,
    CapacityError,
    ForbiddenError,
    InsufficientBalanceError,
    InvalidRequestError,
    PodRequest,
    TransientAPIError,
)
from trainpod.backends.runpod_v2 import V2Client

pytestmark = pytest.mark.runpod

GPU = "NVIDIA GeForce RTX 4090"
NASTY = {"QUOTE": 'a"b', "NEWLINE": "line1\nline2", "BRACES": "} mutation { podTerminate", "UNICODE": "naïve ✓"}


def _request(name: str = "trainpod-v2test-a0", **kw) -> PodRequest:
    kw.setdefault("cloud_type", "COMMUNITY")
    kw.setdefault("min_cuda_version", "12.8")
    return PodRequest(name=name, image="registry.local/trainpod:abc123", gpu_type_id=GPU, **kw)


def test_create_sends_a_contract_valid_body_and_env_arrives_byte_exact(v2_client, fake_runpod):
    pod = v2_client.deploy(_request(env=NASTY, docker_args="python -m trainpod.podside -- echo hi"))
    (sent,) = [r for r in fake_runpod.v2_requests if r["op"] == "createPod"]
    assert Contract().errors("CreatePodRequest", sent["body"]) == []
    assert sent["body"]["gpu"] == {"id": GPU, "count": 1, "minCudaVersion": "12.8"}
    assert "allowedCudaVersions" not in sent["body"]["gpu"] and sent["body"]["cloud"] == "COMMUNITY"
    assert fake_runpod.pods[pod.id].env == NASTY and pod.desired_status == "PROVISIONING"
    assert v2_client.pod(pod.id).desired_status == "RUNNING"  # placed and started at the next read


def test_the_fake_refuses_unknown_fields_with_422_like_the_real_api(fake_runpod):
    r = httpx.post(f"{_base(fake_runpod)}/v2/pods", headers={"Authorization": f"Bearer {fake_runpod.api_key}"},
                   json={"name": "x", "image": "i", "gpu": {"id": GPU, "minCudaVersion": "12.8", "cuda": "12"},
                         "terminateAfter": "2026-01-01T00:00:00Z"})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    errors = r.json()["errors"]
    assert any("terminateAfter" in e for e in errors) and any("cuda" in e for e in errors), errors
    assert fake_runpod.pods == {}
    assert len(fake_runpod.violations) == len(errors)
    fake_runpod.violations.clear()  # deliberate: this test sent the invalid request itself


def test_422_is_reported_as_a_trainpod_bug_naming_the_field(v2_client, fake_runpod):
    fake_runpod.inject("problem", op="createPod", status=422, message="request validation failed")
    fake_runpod.faults[-1].message = "gpu/minCudaVersion: '12' does not match '^\\d+\\.\\d+$'"
    with pytest.raises(InvalidRequestError) as err:
        v2_client.deploy(_request())
    assert "minCudaVersion" in err.value.message and "trainpod bug" in err.value.hint
    assert sum(1 for r in fake_runpod.v2_requests if r["op"] == "createPod") == 1  # never retried


def test_no_capacity_for_the_cuda_floor_is_a_capacity_error(v2_client, fake_runpod):
    fake_runpod.set_stock(GPU, 0, cloud="COMMUNITY", cuda="12.8")
    fake_runpod.set_stock(GPU, 0, cloud="COMMUNITY", cuda="13.0")  # only the CUDA 12.4 hosts are free
    with pytest.raises(CapacityError, match="no longer any instances"):
        v2_client.deploy(_request())
    pod = v2_client.deploy(_request(name="trainpod-v2test-a1", min_cuda_version="12.4"))
    assert fake_runpod.pods[pod.id].cuda == "12.4"


def test_insufficient_balance_is_a_clear_stop(v2_client, fake_runpod):
    fake_runpod.balance = 0
    with pytest.raises(InsufficientBalanceError, match="insufficient balance") as err:
        v2_client.deploy(_request())
    assert "add funds" in err.value.hint


def test_429_waits_retry_after_then_resumes(fake_runpod):
    waits: list[float] = []
    client = V2Client(fake_runpod.api_key, retries=3, backoff_s=0.01, sleep=waits.append)
    fake_runpod.inject("rate_limit", op="listPods", seconds=7)
    assert client.pods() == []
    assert waits == [7.0]


def test_5xx_is_retried_bounded_and_reads_as_transient(fake_runpod):
    client = V2Client(fake_runpod.api_key, retries=3, backoff_s=0.01, max_backoff_s=0.02)
    fake_runpod.inject("http", op="listPods", status=503, times=10)
    with pytest.raises(TransientAPIError, match="503"):
        client.pods()
    assert sum(1 for r in fake_runpod.v2_requests if r["op"] == "listPods") == 3


def test_a_lost_create_reply_adopts_the_pod_instead_of_renting_a_second(v2_client, fake_runpod):
    fake_runpod.inject("lose_response", op="createPod")
    pod = v2_client.deploy(_request())
    assert [p.id for p in fake_runpod.live_pods()] == [pod.id]
    assert sum(1 for r in fake_runpod.v2_requests if r["op"] == "createPod") == 1


def test_a_dropped_create_with_no_pod_is_sent_again(v2_client, fake_runpod):
    fake_runpod.inject("drop", op="createPod")
    pod = v2_client.deploy(_request())
    assert [p.id for p in fake_runpod.live_pods()] == [pod.id]
    assert sum(1 for r in fake_runpod.v2_requests if r["op"] == "createPod") == 2


def test_pods_lists_by_name_prefix_and_terminate_is_idempotent(v2_client, fake_runpod):
    mine = v2_client.deploy(_request())
    v2_client.deploy(_request(name="my-notebook"))
    assert [p.id for p in v2_client.pods(name_prefix="trainpod-")] == [mine.id]
    v2_client.terminate(mine.id)
    v2_client.terminate(mine.id)  # already gone: 404 is not an error
    assert v2_client.pod(mine.id) is None and fake_runpod.pods[mine.id].terminated_by == "account"


def test_stop_releases_the_gpu_and_a_second_stop_is_not_an_error(v2_client, fake_runpod):
    pod = v2_client.deploy(_request())
    assert v2_client.pod(pod.id).desired_status == "RUNNING"
    v2_client.stop(pod.id)
    v2_client.stop(pod.id)  # 409 (not valid for EXITED): left as it is
    after = v2_client.pod(pod.id)
    assert after.desired_status == "EXITED" and after.cost_per_hr is None


def test_the_pod_scoped_key_acts_only_on_its_own_pod(v2_client, fake_runpod):
    mine = v2_client.deploy(_request())
    other = v2_client.deploy(_request(name="trainpod-v2test-other-a0"))
    scoped = V2Client(fake_runpod.pods[mine.id].api_key, retries=1)
    assert scoped.pod(other.id) is None  # not accessible: 404
    scoped.terminate(other.id)  # a 404: nothing happens to the other pod
    with pytest.raises(ForbiddenError):
        scoped.pods()
    assert fake_runpod.pods[other.id].status != "TERMINATED"
    scoped.terminate(mine.id)
    assert fake_runpod.pods[mine.id].terminated_by == "pod"


def test_registry_credentials_are_reused_by_name_and_kept_while_a_pod_uses_them(v2_client, fake_runpod):
    first = v2_client.save_registry_auth("trainpod-ghcr.io-bot", "bot", SecretStr("s3cret-pw"))
    again = v2_client.save_registry_auth("trainpod-ghcr.io-bot", "bot", SecretStr("s3cret-pw"))
    assert first == again and len(fake_runpod.registry_auths) == 1
    pod = v2_client.deploy(_request(container_registry_auth_id=first))
    assert fake_runpod.pods[pod.id].registry == first
    assert v2_client.delete_registry(first) is False  # in use: RunPod keeps it
    v2_client.terminate(pod.id)
    assert v2_client.delete_registry(first) is True and fake_runpod.registry_auths == {}


def test_catalog_stock_counts_only_cuda_versions_at_or_above_the_floor(v2_client, fake_runpod):
    fake_runpod.set_stock(GPU, 0, cloud="SECURE", cuda="12.8")
    fake_runpod.set_stock(GPU, 0, cloud="SECURE", cuda="13.0")
    stock = {s.gpu_type_id: s for s in v2_client.stock([GPU, "NVIDIA RTX A6000", "NVIDIA Imaginary 1"], "SECURE",
                                                       1, "12.8")}
    assert not stock[GPU].in_stock and stock[GPU].availability == "NONE"
    assert stock["NVIDIA RTX A6000"].in_stock and stock["NVIDIA RTX A6000"].cuda_available == ("12.8", "13.0")
    assert stock["NVIDIA Imaginary 1"].availability == "UNLISTED"
    (req,) = [r for r in fake_runpod.v2_requests if r["op"] == "listGpuTypes"]
    assert req["query"]["minCudaVersion"] == ["12.8"] and req["query"]["product"] == ["POD"]


def test_logs_stream_as_sse_with_sources_tail_and_resume(v2_client, fake_runpod):
    pod = v2_client.deploy(_request())
    fake_pod = fake_runpod.pods[pod.id]
    for i in range(5):
        fake_pod.log("container", f"step {i}")
    v2_client.stop(pod.id)  # a final state: the stream ends after the backlog
    events = list(v2_client.logs(pod.id, source="container", tail=3))
    assert [e.line for e in events] == ["step 2", "step 3", "step 4"]
    assert {e.source for e in events} == {"container"} and all(e.id == e.ts for e in events)
    resumed = list(v2_client.logs(pod.id, last_event_id=events[0].id))
    assert [e.line for e in resumed if e.source == "container"] == ["step 3", "step 4"]
    assert any(e.source == "system" and "pod stopped" in e.line for e in resumed)
    (req,) = [r for r in fake_runpod.v2_requests if r["headers"].get("Last-Event-ID")]
    assert req["headers"]["Last-Event-ID"] == events[0].id


def test_billing_reports_what_the_pod_cost(v2_client, fake_runpod):
    pod = v2_client.deploy(_request())
    assert v2_client.pod_cost(pod.id) is None  # not started yet: no record
    v2_client.pod(pod.id)
    fake_runpod.pods[pod.id].billed_s = 1800  # half an hour already run
    cost = v2_client.pod_cost(pod.id)
    assert cost == pytest.approx(0.34 / 2, rel=0.01)


def test_errors_never_echo_the_key(fake_runpod):
    client = V2Client(fake_runpod.api_key, retries=1)
    fake_runpod.inject("problem", op="listPods", status=400, message=f"key {fake_runpod.api_key} is suspended")
    with pytest.raises(CapacityError) as err:
        client.pods()
    assert fake_runpod.api_key not in str(err.value) and "***" in err.value.message
    with pytest.raises(AuthError):
        V2Client("rpa_wrong_key_123", retries=1).pods()


def test_every_path_the_client_calls_is_in_the_vendored_document():
    source = (Path(__file__).parents[2] / "cli/trainpod/backends/runpod_v2.py").read_text()
    called = set(re.findall(r'"(/v2/[a-z/{}_]*)', source)) | {
        re.sub(r"\{quote\([^)]*\)\}", "{id}", p) for p in re.findall(r'f"(/v2/[^"]+)"', source)}
    contract = Contract()
    assert called and all(contract.path_known(p.replace("{id}", "x")) for p in called), called
    prov = contract.provenance
    assert prov["version"] == "2.0.0" and prov["synced"] == "2026-08-18" and len(prov["sha256"]) == 64


def _base(fake) -> str:
    import os

    return os.environ["RUNPOD_API_BASE_URL"]


def test_problem_answers_of_the_fake_are_rfc9457(fake_runpod):
    r = httpx.get(f"{_base(fake_runpod)}/v2/pods/nope", headers={"Authorization": f"Bearer {fake_runpod.api_key}"})
    body = json.loads(r.content)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert set(body) >= {"title", "status", "detail"} and body["status"] == 404
