"""The RunPod client at the HTTP boundary: real runpod SDK transport → HTTP → loopback fake API.

Nothing of trainpod is patched; faults are injected in the fake server.
"""

from __future__ import annotations

import json
import secrets
import traceback

import pytest
from graphql import parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from trainpod.backends.runpod_api import (
    AuthError,
    CapacityError,
    GraphQLClient,
    PodRequest,
    RunPodAPIError,
    TransientAPIError,
    gql_literal,
)

pytestmark = pytest.mark.runpod

GPU = "NVIDIA GeForce RTX 4090"
NASTY = {
    "QUOTES": 'say "hi" and \'bye\'',
    "NEWLINES": "line1\nline2\r\nline3\ttab",
    "BACKSLASH": "C:\\path\\to\\\"x\"\\",
    "SUBSHELL": "$(rm -rf /) ${HOME} `id`",
    "UNICODE": "Grüße — 東京 🚀 \u2028 \x7f",
    "INJECT": '"}, gpuCount: 8, env: [{key: "PWNED", value: "1"}]}) { id } }#',
    "CONTROL": "\x00\x01\x1b[31m",
}


def _request(name: str = "trainpod-test-0", **kw) -> PodRequest:
    return PodRequest(name=name, image="registry.local/trainpod:abc123", gpu_type_id=GPU, **kw)


def test_gpu_types_with_prices(runpod_client):
    types = {g.id: g for g in runpod_client.gpu_types()}
    rtx = types[GPU]
    assert rtx.memory_gb == 24
    assert rtx.price("COMMUNITY") == 0.34 and rtx.price("SECURE") == 0.69
    assert rtx.price("ALL") == 0.34 and rtx.price("COMMUNITY", spot=True) == 0.2
    assert types["NVIDIA A100-SXM4-80GB"].price("COMMUNITY", spot=True) is None


def test_deploy_on_demand_sends_the_request_exactly(runpod_client, fake_runpod):
    pod = runpod_client.deploy(_request(env=NASTY, cloud_type="COMMUNITY", allowed_cuda_versions=["12.4", "12.8"],
                                        container_disk_gb=40, ports="8888/http", docker_args="python -m x"))
    fp = fake_runpod.pods[pod.id]
    assert fp.env == NASTY  # byte-exact, every character class
    assert fp.gpu_count == 1 and fp.cloud_type == "COMMUNITY" and not fp.spot
    assert fp.request["allowedCudaVersions"] == ["12.4", "12.8"]
    assert fp.request["containerDiskInGb"] == 40 and fp.request["startSsh"] is False
    assert fp.handle["RUNPOD_POD_ID"] == pod.id  # the runner got RunPod's injected variables
    assert pod.desired_status == "RUNNING" and pod.cost_per_hr == 0.34 and pod.started
    assert "PWNED" not in fp.env and len(fake_runpod.pods) == 1


def test_deploy_spot_uses_bid(runpod_client, fake_runpod):
    pod = runpod_client.deploy(_request(cloud_type="COMMUNITY", bid_per_gpu=0.25))
    fp = fake_runpod.pods[pod.id]
    assert fp.spot and fp.request["bidPerGpu"] == 0.25
    assert "podRentInterruptable" in fake_runpod.requests[-1]["query"]
    with pytest.raises(RunPodAPIError, match="below the minimum bid"):
        runpod_client.deploy(_request(name="low-bid", cloud_type="COMMUNITY", bid_per_gpu=0.01))


def test_status_list_stop_terminate_idempotent(runpod_client, fake_runpod):
    pod = runpod_client.deploy(_request())
    assert [p.id for p in runpod_client.pods()] == [pod.id]
    runpod_client.stop(pod.id)
    assert runpod_client.pod(pod.id).desired_status == "EXITED"
    runpod_client.terminate(pod.id)
    runpod_client.terminate(pod.id)  # already gone: no error
    assert runpod_client.pod(pod.id).desired_status == "TERMINATED"
    assert runpod_client.pods() == []
    assert runpod_client.pod("doesnotexist") is None
    runpod_client.terminate("doesnotexist")


def test_pod_that_never_starts_reads_as_not_started(runpod_client, fake_runpod):
    fake_runpod.never_start = True
    pod = runpod_client.deploy(_request())
    assert pod.desired_status == "RUNNING" and not runpod_client.pod(pod.id).started


def test_preempted_pod_reads_exited(runpod_client, fake_runpod):
    pod = runpod_client.deploy(_request(bid_per_gpu=0.3))
    fake_runpod.preempt(pod.id)
    now = runpod_client.pod(pod.id)
    assert now.desired_status == "EXITED" and not now.started


def test_registry_auth_roundtrip_and_password_never_in_errors(runpod_client, fake_runpod):
    password = 'pa"ss\n' + secrets.token_hex(8)  # made at run time: the traceback's source lines cannot hold it
    auth_id = runpod_client.save_registry_auth("ghcr", "bot", SecretStr(password))
    assert fake_runpod.registry_auths[auth_id]["password"] == password
    fake_runpod.inject("error", op="saveRegistryAuth", message=f"invalid password {password}")
    with pytest.raises(RunPodAPIError) as info:
        runpod_client.save_registry_auth("ghcr", "bot", SecretStr(password))
    text = "".join(traceback.format_exception(info.value))
    assert password.split("\n")[1] not in text and "***" in text
    assert "saveRegistryAuth(input" not in str(info.value)


def test_errors_never_carry_the_document_or_secrets(runpod_client, fake_runpod, monkeypatch):
    canary = "AKIA-canary-" + secrets.token_hex(8)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", canary)
    fake_runpod.inject("error", op="podFindAndDeployOnDemand", message=f"bad env value {canary} for key X")
    with pytest.raises(RunPodAPIError) as info:
        runpod_client.deploy(_request(env={"AWS_SECRET_ACCESS_KEY": canary, "X": "1"}))
    text = "".join(traceback.format_exception(info.value)) + repr(info.value.args)
    assert canary not in text and "***" in text
    # the SDK's QueryError (whose .query holds the document) is neither chained nor printed
    assert "imageName" not in text and info.value.__cause__ is None and info.value.__suppress_context__


def test_api_key_is_redacted_even_when_the_server_echoes_it(runpod_client, fake_runpod):
    fake_runpod.inject("error", op="myself", message=f"key {fake_runpod.api_key} is rate limited")
    with pytest.raises(RunPodAPIError) as info:
        GraphQLClient(fake_runpod.api_key, retries=1).pods()
    assert fake_runpod.api_key not in str(info.value)


def test_retries_5xx_pages_and_dropped_connections(runpod_client, fake_runpod):
    fake_runpod.inject("http", op="gpuTypes", status=503)
    fake_runpod.inject("drop", op="gpuTypes")
    before = len(fake_runpod.requests)
    assert runpod_client.gpu_types()
    assert len(fake_runpod.requests) - before == 3


def test_retries_are_bounded(runpod_client, fake_runpod):
    fake_runpod.inject("http", op="myself", status=502, times=10)
    with pytest.raises(TransientAPIError, match="non-JSON|HTTP 502"):
        runpod_client.pods()
    assert sum(1 for r in fake_runpod.requests if "myself" in r["query"]) == 3


def test_lost_deploy_response_does_not_rent_twice(runpod_client, fake_runpod):
    fake_runpod.inject("lose_response", op="podFindAndDeployOnDemand")
    pod = runpod_client.deploy(_request(name="trainpod-run-1-a0"))
    assert list(fake_runpod.pods) == [pod.id]


def test_deploy_retried_when_it_did_not_reach_runpod(runpod_client, fake_runpod):
    fake_runpod.inject("http", op="podFindAndDeployOnDemand", status=500)
    pod = runpod_client.deploy(_request())
    assert list(fake_runpod.pods) == [pod.id]


def test_capacity_error_is_its_own_type(runpod_client, fake_runpod):
    fake_runpod.inject("capacity", op="podFindAndDeployOnDemand")
    with pytest.raises(CapacityError, match="no longer any instances"):
        runpod_client.deploy(_request())
    assert fake_runpod.pods == {}


def test_wrong_or_missing_key(fake_runpod):
    with pytest.raises(AuthError, match="refused"):
        GraphQLClient("rpa_wrong_key_123", retries=1).pods()
    with pytest.raises(AuthError, match="RUNPOD_API_KEY"):
        GraphQLClient("")


def test_pod_scoped_key_only_reaches_its_own_pod(runpod_client, fake_runpod):
    mine, other = runpod_client.deploy(_request(name="a")), runpod_client.deploy(_request(name="b"))
    scoped = GraphQLClient(fake_runpod.pods[mine.id].api_key, retries=1)
    assert scoped.pod(mine.id).id == mine.id and scoped.pod(other.id) is None
    with pytest.raises(RunPodAPIError, match="scoped"):
        scoped.pods()
    scoped.terminate(other.id)  # "not found" for this key: nothing happens to the other pod
    assert fake_runpod.pods[other.id].status == "RUNNING"
    scoped.terminate(mine.id)
    assert fake_runpod.pods[mine.id].status == "TERMINATED"


def test_the_sdk_create_pod_breaks_on_quotes_which_is_why_we_render_ourselves(fake_runpod):
    from runpod import error as sdk_error
    from runpod.api.graphql import run_graphql_query
    from runpod.api.mutations.pods import generate_pod_deployment_mutation

    doc = generate_pod_deployment_mutation("n", "img", GPU, env={"A": 'x"y'})
    with pytest.raises(sdk_error.QueryError) as info:
        run_graphql_query(doc, api_key=fake_runpod.api_key)
    assert 'x"y' in info.value.query  # the SDK error carries the whole document, values included
    assert fake_runpod.pods == {}


_value = st.text(st.characters(blacklist_categories=("Cs",)), max_size=80)
_key = st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.dictionaries(_key, _value, max_size=4), name=_value)
def test_property_any_value_arrives_byte_exact_and_cannot_change_the_mutation(runpod_client, fake_runpod,
                                                                             env, name):
    before = set(fake_runpod.pods)
    pod = runpod_client.deploy(PodRequest(name=name, image="img:tag", gpu_type_id=GPU, env=env))
    assert set(fake_runpod.pods) - before == {pod.id}
    fp = fake_runpod.pods[pod.id]
    assert fp.env == env and fp.name == name
    assert fp.gpu_count == 1 and fp.image == "img:tag" and fp.request["startSsh"] is False
    # one operation, one root field: no value escaped into the document structure
    op = parse(fake_runpod.requests[-1]["query"]).definitions
    assert len(op) == 1 and [s.name.value for s in op[0].selection_set.selections] == ["podFindAndDeployOnDemand"]


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | _value, lambda inner: st.lists(inner, max_size=3), max_leaves=8))
def test_property_literals_parse_back_to_the_same_value(value):
    from graphql import value_from_ast_untyped
    from graphql.language import parse_value

    assert value_from_ast_untyped(parse_value(gql_literal(value))) == json.loads(json.dumps(value))
