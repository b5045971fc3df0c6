"""RunPod Instant Clusters at the HTTP boundary: the REST v2 client's cluster calls and the cluster backend's
submit / status / logs / release / cancel / sweep against the loopback fake (every request and answer held
to RunPod's vendored OpenAPI document) and a loopback S3. Member pods are IdleRunner pods: the test writes
what the nodes' supervisors would write, so no Docker is needed (the container chain is in
``test_runpod_cluster_chain.py``).
"""

from __future__ import annotations

import json
import time

import pytest

from tests.contract.openapi import Contract
from trainpod import storage
from trainpod.backends.runpod_api import CapacityError
from trainpod.backends.runpod_cluster import RunPodClusterBackend, sweep
from trainpod.backends.runpod_v2 import ClusterCompute, CreateClusterRequest, V2Client
from trainpod.config.loader import load_catalog
from trainpod.errors import TrainpodError
from trainpod.runs import RunRegistry
from trainpod.settings import load_settings
from trainpod.spec import LaunchShape, RunSpec, StorageURIs

pytestmark = [pytest.mark.runpod, pytest.mark.s3]

GPU = "NVIDIA A100-SXM4-80GB"
RUN_ID = "lora-run-20260101-000000-abc123"


@pytest.fixture(autouse=True)
def _stock(fake_runpod):
    fake_runpod.set_stock(GPU, 64)  # room for several 2 x 8-GPU clusters in the fake's three hosts per cloud


def _request(name: str = "trainpod-x-c0", nodes: int = 2) -> CreateClusterRequest:
    return CreateClusterRequest(name=name, compute=ClusterCompute(gpuTypeId=GPU, gpuCountPerPod=8, podCount=nodes),
                                image="registry.local/trainpod:abc", args="python -m trainpod.podside -- x",
                                env={"A": "1"})


def test_create_lists_the_members_by_rank_with_the_cluster_env_and_delete_ends_them_all(v2_client, fake_runpod):
    cluster = v2_client.create_cluster(_request(nodes=3))
    (sent,) = [r for r in fake_runpod.v2_requests if r["op"] == "createCluster"]
    assert Contract().errors("CreateClusterRequest", sent["body"]) == []
    assert cluster.compute.podCount == 3 and cluster.type == "TRAINING"
    nodes = v2_client.cluster_pods(cluster.id)
    assert [n.rank for n in nodes] == [0, 1, 2]
    for n in nodes:
        env = fake_runpod.pods[n.pod.id].cluster_env
        assert env["NODE_RANK"] == str(n.rank) and env["NUM_NODES"] == "3" and env["WORLD_SIZE"] == "24"
        assert env["PRIMARY_PORT"] == fake_runpod.pods[nodes[0].pod.id].cluster_env["PRIMARY_PORT"]
    assert v2_client.pods() == []  # member pods are not standalone pods (listPods without includeClusterPods)
    assert v2_client.cluster(cluster.id).pods.byStatus == {"RUNNING": 3}
    with pytest.raises(CapacityError):  # member pods cannot be deleted through the pod endpoints (400)
        v2_client.terminate(nodes[1].pod.id)
    v2_client.delete_cluster(cluster.id)
    assert v2_client.cluster(cluster.id) is None and v2_client.clusters() == []
    assert {p.status for p in fake_runpod.pods.values()} == {"TERMINATED"}
    v2_client.delete_cluster(cluster.id)  # already gone: not an error


def test_a_lost_create_reply_adopts_the_cluster_instead_of_renting_a_second(v2_client, fake_runpod):
    fake_runpod.inject("lose_response", op="createCluster")
    cluster = v2_client.create_cluster(_request())
    assert [c.id for c in v2_client.clusters()] == [cluster.id] and len(fake_runpod.pods) == 2


def test_a_nodes_own_key_reads_its_membership_and_deletes_its_cluster_only(v2_client, fake_runpod):
    mine, other = v2_client.create_cluster(_request("trainpod-a-c0")), v2_client.create_cluster(_request("trainpod-b-c0"))
    member = fake_runpod.pods[v2_client.cluster_pods(mine.id)[1].pod.id]
    node_key = V2Client(member.api_key, retries=2, backoff_s=0.01)
    assert node_key.pod_cluster(member.id).id == mine.id
    node_key.delete_cluster(other.id)  # 404 for a foreign cluster: read as "gone", nothing deleted
    assert v2_client.cluster(other.id) is not None
    node_key.delete_cluster(mine.id)
    assert v2_client.cluster(mine.id) is None and fake_runpod.clusters[mine.id].deleted_by == "pod"


# ------------------------------------------------------------------------------------------------ backend
@pytest.fixture
def backend() -> RunPodClusterBackend:
    b = RunPodClusterBackend()
    b.poll_s, b.start_timeout_s, b.release_timeout_s = 0.05, 5.0, 0.5
    return b


def _plan(backend, s3, run_id=RUN_ID, **overrides):
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-2x8a100-lora", overrides)
    spec = RunSpec(run_id=run_id, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="registry.local/trainpod:cuda-0123456789ab", launch=LaunchShape(
                       launcher="torchrun", nproc_per_node=8, nnodes=2),
                   storage=StorageURIs(dataset=cfg.dataset.path, output=s3.uri(f"runs/{run_id}")))
    settings = load_settings(storage_uri=s3.uri())
    return backend.plan(spec, settings), settings


def _exit(s3, name: str, cluster_id: str, code: int, reason: str = "x") -> None:
    storage.write_bytes(s3.uri(f"runs/{RUN_ID}/{name}"), json.dumps(
        {"cluster_id": cluster_id, "exit_code": code, "reason": reason}).encode())


def test_submit_creates_one_cluster_with_secrets_filled_in_and_records_it(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    (cluster,) = fake_runpod.clusters.values()
    assert handle.provider_id == cluster.id and handle.backend == "runpod-cluster"
    env = cluster.request["env"]  # what every node gets: one run-scoped STS session, never the user's keys
    assert env["AWS_SECRET_ACCESS_KEY"] and env["AWS_SESSION_TOKEN"]
    assert settings.aws_secret_access_key.get_secret_value() not in json.dumps(env)
    assert plan.display()["provider_request"]["body"]["env"]["AWS_SESSION_TOKEN"] == "***"
    assert RunSpec.from_json(env["TRAINPOD_RUN_SPEC"]) == plan.spec
    saved = RunRegistry(settings.state_path).get(RUN_ID)
    assert saved.extra["cost_per_hr"] == round(1.89 * 16, 4) and saved.extra["started"]
    assert backend.status(saved).state == "running"
    assert backend.over_limit(saved, backend.status(saved)) is None


def test_a_cluster_that_does_not_start_is_deleted_and_reported(backend, s3, fake_runpod):
    fake_runpod.never_start_ranks = {1}
    plan, settings = _plan(backend, s3)
    with pytest.raises(CapacityError, match="did not get all 2 nodes running"):
        backend.submit(plan, settings)
    assert all(c.deleted_by == "account" for c in fake_runpod.clusters.values())


def test_status_reads_node_markers_of_this_cluster_only(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    _exit(s3, "POD_EXIT.node-1", "cluster_of_an_earlier_attempt", 1)  # before a --resume: ignored
    assert backend.status(handle).state == "running"
    _exit(s3, "POD_EXIT.node-1", handle.provider_id, 3)  # a coordinated stop: node 0 still writes the checkpoint
    assert backend.status(handle).state == "running"
    _exit(s3, "POD_EXIT.node-1", handle.provider_id, 1, "child exited with 1")
    status = backend.status(handle)
    assert (status.state, status.exit_code, status.detail) == ("failed", 1, "node 1: child exited with 1")
    lines = list(backend.release(handle, status, settings))  # the cluster is still there: the CLI deletes it
    assert len(lines) == 1 and "deleting it" in lines[0]
    assert fake_runpod.clusters[handle.provider_id].deleted_by == "account"
    assert backend.status(handle).state == "failed"


def test_logs_of_node_n_outlive_the_cluster_and_a_missing_node_is_a_clear_error(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    lines = list(backend.logs(handle, node=1))  # before node 1's supervisor uploaded anything: the pod's own log
    assert any(f"cluster {handle.provider_id} node 1:" in line for line in lines), lines
    with pytest.raises(TrainpodError, match="has no node 5") as info:
        list(backend.logs(handle, node=5))
    assert "0..1" in info.value.hint
    storage.write_bytes(s3.uri(f"runs/{RUN_ID}/logs/node-1.log"), b"[trainpod] node 1 of 2\nRuntimeError: x\n")
    backend.cancel(handle)  # the cluster (and its pods' own logs) are gone ...
    assert list(backend.logs(handle, node=1)) == ["[trainpod] node 1 of 2", "RuntimeError: x"]  # ... S3 is not
    with pytest.raises(TrainpodError, match="node 0 left no log"):
        list(backend.logs(handle, node=0))
    storage.write_bytes(s3.uri(f"runs/{RUN_ID}/logs/train.log"), b"step 1/6 loss 2.0\n")
    assert list(backend.logs(handle)) == ["step 1/6 loss 2.0"]  # default: rank 0's training log in S3


def test_cancel_deletes_every_node(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    backend.cancel(handle)
    backend.cancel(handle)  # idempotent
    assert {p.status for p in fake_runpod.pods.values()} == {"TERMINATED"}
    assert backend.status(RunRegistry(settings.state_path).get(RUN_ID)).state == "cancelled"


def test_sweep_finds_clusters_that_should_not_bill(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    live = backend.submit(plan, settings)
    done_plan, _ = _plan(backend, s3, run_id="done-run-20260101-000000-abc123")
    done = backend.submit(done_plan, settings)
    storage.write_bytes(s3.uri("runs/done-run-20260101-000000-abc123/DONE"), b"{}")
    stranger = V2Client.from_settings(settings).create_cluster(_request("trainpod-someone-elses-run-c0"))
    report = {i.cluster_id: i for i in sweep(settings)}
    assert report[live.provider_id].verdict == "keep" and report[done.provider_id].verdict == "done"
    assert report[stranger.id].verdict == "unknown" and not any(i.deleted for i in report.values())
    swept = {i.cluster_id for i in sweep(settings, delete=True) if i.deleted}
    assert swept == {done.provider_id}
    swept = {i.cluster_id for i in sweep(settings, delete=True, include_unknown=True) if i.deleted}
    assert swept == {stranger.id}
    assert [c.id for c in V2Client.from_settings(settings).clusters()] == [live.provider_id]


# ------------------------------------------------------------------------------------------------ node supervisor
def _node(fake_runpod, v2_client, tmp_path, rank: int, child: str, **overrides):
    """A supervisor on cluster node ``rank`` (its pod-scoped key, as inside the pod), over a local output."""
    import sys

    from trainpod.pod.supervisor import ClusterNode, Supervisor, TrainpodStorage

    cluster = v2_client.create_cluster(_request())
    member = fake_runpod.pods[v2_client.cluster_pods(cluster.id)[rank].pod.id]
    cfg = load_catalog(use_cwd=False).resolve("smoke", overrides)
    spec = RunSpec(run_id="node-run", created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="img:test", storage=StorageURIs(dataset=cfg.dataset.path, output=str(tmp_path / "out")),
                   stop_grace_seconds=2.0)
    waits: list[float] = []
    sup = Supervisor(spec, [sys.executable, "-c", child], pod_id=member.id, storage=TrainpodStorage(),
                     api=V2Client(member.api_key, retries=2, backoff_s=0.01), node=ClusterNode(rank, 2),
                     sleep=waits.append)
    return sup, cluster, member, waits


def test_each_nodes_watchdog_spends_max_cost_for_the_whole_cluster_and_a_stopped_node_ends_it(
        fake_runpod, v2_client, tmp_path):
    # one node costs $15.12/h (8 x $1.89); $0.0168 is 2 s of two nodes (4 s of one): the watchdog must use both
    sup, cluster, member, waits = _node(fake_runpod, v2_client, tmp_path, 1, "import time; time.sleep(60)",
                                        max_cost_usd=0.0168, max_runtime_minutes=None)
    started = time.monotonic()
    code = sup.run()
    took = time.monotonic() - started
    assert code == 128 + 15 and took < 3.5, took  # SIGTERM at the cluster-wide deadline (~2 s), not ~4 s
    marker = json.loads((tmp_path / "out" / "POD_EXIT.node-1").read_text())
    assert marker["cluster_id"] == cluster.id and marker["node_rank"] == 1
    assert "max_cost_usd=0.0168 at $30.24/h" in marker["reason"]
    assert waits == []  # not a finished or coordinated stop: the cluster is deleted at once
    assert fake_runpod.clusters[cluster.id].deleted_by == "pod"


def test_a_finished_node_other_than_0_waits_for_node_0_before_ending_the_cluster(fake_runpod, v2_client, tmp_path):
    sup, cluster, member, waits = _node(fake_runpod, v2_client, tmp_path, 1, "pass")
    assert sup.run() == 0
    assert waits == [2.0 + sup.node_wait_extra_s]  # node 0 (still writing outputs) normally deletes it meanwhile
    assert fake_runpod.clusters[cluster.id].deleted_by == "pod"  # ...else this node does, afterwards
    log = (tmp_path / "out" / "logs" / "node-1.log").read_text()
    assert log.startswith(f"[trainpod] node 1 of 2, cluster {cluster.id}, pod {member.id}:")
