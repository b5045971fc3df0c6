"""A multi-node preset on a (stand-in) RunPod Instant Cluster, nothing mocked: CLI -> REST v2 client -> HTTP ->
loopback fake API -> one container per node on the local Docker engine (host networking) -> every node's
podside supervisor -> torchrun (c10d rendezvous at the cluster's PRIMARY_ADDR:PRIMARY_PORT) -> trainer ranks
talking gloo over loopback -> rank 0 writes to S3 (moto on loopback) -> the cluster is deleted -> outputs
downloaded by the CLI.

The CPU image stands in for the CUDA one (``TRAINPOD_RUNPOD_CPU_STAND_IN=1``, as in the single-pod chain): the
test's overlay gives the ``cpu`` hardware table two nodes, a runpod_gpu_type_id and ``GLOO_SOCKET_IFNAME=lo``
(its "cluster network"). Each node runs one process, so 2 nodes x batch 4 must train exactly like one process
with batch 8 (the trainer shards rows by rank; ``test_multiproc.py`` proves the same for local torchrun).
Steps are few: both nodes share this machine's cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.fixtures.runpod import CPU_POD_HARDWARE, pod_chain
from tests.fixtures.train import read_metrics, run_trainer

pytestmark = [pytest.mark.runpod, pytest.mark.docker, pytest.mark.s3, pytest.mark.train]

STEPS = 6
KILL_STEPS = 12
LOSS_TOL = 2e-3  # gloo all-reduce reorders float additions; a data-order bug is ~0.1+
OVERLAY = CPU_POD_HARDWARE + """nnodes = 2
rendezvous_timeout_s = 60
env = {{ GLOO_SOCKET_IFNAME = "lo" }}

[hardware.cpu-one]
name = "one CPU process: the reference for the 2-node run"
device = "cpu"
available_memory_gb = 16
max_batch_size = 16
max_sequence_length = 2048
image = "cpu"

[hyperparameters.cluster]
num_epochs = 1
max_steps = {steps}
learning_rate = 1e-2
warmup_steps = 1
lr_scheduler = "linear"
max_grad_norm = 1.0
eval_steps = {steps}
save_steps = 2
logging_steps = 1
keep_checkpoints = 2
seed = 1234

[datasets.sample-s3]
path = "{dataset}"
train = "train.jsonl"
val = "val.jsonl"
test = "test.jsonl"
format = "instruction"

[presets.smoke-cluster]
description = "the smoke run on a 2-node (stand-in) RunPod Instant Cluster, one process per node"
expert = "tiny"
hardware = "cpu"
dataset = "sample-s3"
hyperparameters = "cluster"
lora = "minimal"
sequence_length = 128
batch_size = 4
gradient_accumulation = 1
remote = "runpod"

[presets.smoke-one]
description = "the same global batch in one process, locally"
expert = "tiny"
hardware = "cpu-one"
dataset = "sample"
hyperparameters = "cluster"
lora = "minimal"
sequence_length = 128
batch_size = 8
gradient_accumulation = 1
remote = "local"
"""


@pytest.fixture
def cluster_chain(tmp_path, s3, fake_runpod, docker_env, cpu_image, monkeypatch):
    from trainpod import storage
    from trainpod.config.loader import load_catalog

    dataset = s3.uri("datasets/sample")
    storage.sync_up(load_catalog(use_cwd=False).datasets["sample"].path, dataset)
    yield from pod_chain(monkeypatch, tmp_path, s3, fake_runpod, docker_env,
                         OVERLAY.format(steps=STEPS, dataset=dataset))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainpod", *args]


def launch(*extra: str, timeout: float = 420) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli("launch", "smoke-cluster", "--remote", "runpod", "--yes", "--max-runtime", "10", *extra),
                          capture_output=True, text=True, timeout=timeout)


def run_prefix(s3) -> str:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix="trainpod/runs/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    (run,) = {k.split("/")[2] for k in keys}
    return f"trainpod/runs/{run}/"


def s3_metrics(s3, prefix: str) -> dict[int, float]:
    body = s3.client().get_object(Bucket=s3.bucket, Key=prefix + "logs/metrics.jsonl")["Body"].read().decode()
    return {(r := json.loads(line))["step"]: r["loss"] for line in body.splitlines()}


def node_logs(fake) -> str:
    """Every node's container log (the end of it), for a failure message."""
    out = []
    for pod in fake.pods.values():
        out.append(f"--- node {pod.node_rank} ({pod.id})")
        out += [e["line"] for e in pod.logs[-60:]]
    return "\n".join(out)


def leftover_containers(docker_env, fake) -> list[str]:
    ids = {p.id for p in fake.pods.values()}
    found = docker_env.client().containers.list(all=True, filters={"label": "trainpod.fake-runpod"})
    return [c.name for c in found if c.labels.get("trainpod.fake-runpod") in ids]


def test_two_nodes_train_like_one_process_with_the_same_global_batch_and_the_cluster_ends(
        cluster_chain, s3, tmp_path, docker_env):
    res = launch()
    assert res.returncode == 0, res.stdout + res.stderr + node_logs(cluster_chain)
    (cluster,) = cluster_chain.clusters.values()
    nodes = [cluster_chain.pods[i] for i in cluster.pod_ids]
    assert [(p.node_rank, p.status) for p in nodes] == [(0, "TERMINATED"), (1, "TERMINATED")]
    assert cluster.deleted_by == "pod"  # node 0's supervisor deleted the cluster with its own key...
    assert "still exists; deleting it" not in res.stdout  # ...so the CLI's backstop was not needed
    assert leftover_containers(docker_env, cluster_chain) == []
    assert f"step {STEPS}/{STEPS}" in res.stdout  # rank 0's log tailed from S3 while it ran

    prefix = run_prefix(s3)
    meta = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=prefix + "metadata.json")["Body"].read())
    assert meta["training"]["world_size"] == 2 and meta["training"]["steps"] == STEPS
    run_id = prefix.split("/")[2]
    assert (tmp_path / "downloads" / run_id / "adapter_model.safetensors").is_file()

    # the reference: one local process, batch 8 (= 2 nodes x 4), same data, seed and schedule
    from trainpod.config.loader import load_catalog
    from trainpod.launcher import launch_shape
    from trainpod.spec import RunSpec, StorageURIs, utcnow_iso

    cfg = load_catalog(os.environ["TRAINPOD_CONFIG"], use_cwd=False).resolve("smoke-one", {})
    out = tmp_path / "one"
    spec = RunSpec(run_id="one-process", created=utcnow_iso(), remote="local", config=cfg, launch=launch_shape(cfg),
                   storage=StorageURIs(dataset=cfg.dataset.path, output=str(out)))
    ref = run_trainer(spec.write(tmp_path / "one.spec.json"), timeout=300)
    assert ref.returncode == 0, ref.stdout + ref.stderr
    baseline, losses = read_metrics(out), s3_metrics(s3, prefix)
    assert sorted(losses) == sorted(baseline) == list(range(1, STEPS + 1))
    worst = max(losses, key=lambda s: abs(losses[s] - baseline[s]))
    assert abs(losses[worst] - baseline[worst]) < LOSS_TOL, f"step {worst}: {losses[worst]} vs {baseline[worst]}"
    assert len(set(losses.values())) > 1  # the curve moves: equal losses are not a constant

    sweep = subprocess.run(cli("runs", "sweep", "--json"), capture_output=True, text=True, timeout=60)
    assert sweep.returncode == 0, sweep.stderr
    assert json.loads(sweep.stdout) == []
    node1 = subprocess.run(cli("runs", "logs", run_id, "--node", "1"), capture_output=True, text=True, timeout=60)
    assert node1.returncode == 0, node1.stderr
    assert f"[trainpod] node 1 of 2, cluster {cluster.id}" in node1.stdout  # kept in S3 after the cluster went


def test_a_killed_node_fails_the_run_ends_every_node_and_resume_finishes_the_steps(cluster_chain, s3, docker_env):
    sets = ("--set", f"max_steps={KILL_STEPS}", "--set", f"eval_steps={KILL_STEPS}")
    proc = subprocess.Popen(cli("launch", "smoke-cluster", "--remote", "runpod", "--yes", "--max-runtime", "10", *sets),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 300
        while True:
            pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix="trainpod/runs/")
            if any(o["Key"].endswith("checkpoints/step-00000002/manifest.json")
                   for page in pages for o in page.get("Contents", [])):
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "no complete checkpoint within 300 s"
            time.sleep(0.3)
        (cluster,) = cluster_chain.clusters.values()
        node1 = cluster_chain.pods[cluster.pod_ids[1]]
        killed = time.monotonic()
        cluster_chain.kill_container(node1.id)  # node 1's container dies mid-run (SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    failed_after = time.monotonic() - killed
    assert proc.returncode not in (0, None), out + err
    prefix = run_prefix(s3)
    assert max(s3_metrics(s3, prefix)) < KILL_STEPS, "the run finished before the kill: the test proves nothing"
    assert "failed" in err and failed_after < 180, (failed_after, err)
    assert cluster.deleted_by is not None
    assert {p.status for p in cluster_chain.pods.values()} == {"TERMINATED"}
    assert leftover_containers(docker_env, cluster_chain) == []

    run_id = prefix.split("/")[2]
    node0 = subprocess.run(cli("runs", "logs", run_id, "--node", "0"), capture_output=True, text=True, timeout=60)
    assert node0.returncode == 0 and "Traceback" in node0.stdout, node0.stdout + node0.stderr  # why node 0 failed

    res = launch("--resume", run_id, *sets)
    assert res.returncode == 0, res.stdout + res.stderr + node_logs(cluster_chain)
    first, second = cluster_chain.clusters.values()
    assert second.deleted_by == "pod" and first.id != second.id
    log = s3.client().get_object(Bucket=s3.bucket, Key=prefix + "logs/train.log")["Body"].read().decode()
    assert "resumed from" in log
    assert max(s3_metrics(s3, prefix)) == KILL_STEPS  # the same total steps
    meta = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=prefix + "metadata.json")["Body"].read())
    assert meta["training"]["steps"] == KILL_STEPS
    assert leftover_containers(docker_env, cluster_chain) == []
