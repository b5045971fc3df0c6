"""The whole RunPod chain, nothing mocked: CLI -> REST v2 client (httpx; spot: the legacy GraphQL client over
the runpod SDK) -> HTTP -> loopback fake API (every v2 request and answer validated against RunPod's OpenAPI
document) -> a real container on the local Docker engine (host networking) -> podside supervisor -> trainer ->
S3 (moto on loopback) -> outputs downloaded by the CLI.

The CPU image stands in for the CUDA one: a test --config overlay gives the cpu hardware table a
runpod_gpu_type_id, and ``TRAINPOD_RUNPOD_CPU_STAND_IN=1`` (settings.runpod_cpu_stand_in) lets RunPod's
plan() accept it; every production refusal stays as it is. Steps are tiny, so each pod trains for
seconds; the image is built once per session (``cpu_image``) and the CLI's on-demand build reuses it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.runpod import CPU_POD_HARDWARE, launch_and_preempt, pod_chain

pytestmark = [pytest.mark.runpod, pytest.mark.docker, pytest.mark.s3, pytest.mark.train]

STEPS = 6
OVERLAY = CPU_POD_HARDWARE + """
[hyperparameters.pod]
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

[presets.smoke-pod]
description = "the smoke run on a (stand-in) RunPod pod"
expert = "tiny"
hardware = "cpu"
dataset = "sample-s3"
hyperparameters = "pod"
lora = "minimal"
sequence_length = 128
batch_size = 4
gradient_accumulation = 1
remote = "runpod"
"""


@pytest.fixture
def chain(tmp_path, s3, fake_runpod, docker_env, cpu_image, monkeypatch):
    """Fake API running pods as containers; the dataset pushed; the CLI's environment."""
    from trainpod import storage
    from trainpod.config.loader import load_catalog

    dataset = s3.uri("datasets/sample")
    storage.sync_up(load_catalog(use_cwd=False).datasets["sample"].path, dataset)
    yield from pod_chain(monkeypatch, tmp_path, s3, fake_runpod, docker_env, OVERLAY.format(steps=STEPS, dataset=dataset))


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainpod", *args]


def launch(*extra: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli("launch", "smoke-pod", "--remote", "runpod", "--yes", *extra), capture_output=True,
                          text=True, timeout=timeout)


def wait_until(pred, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def s3_keys(s3, prefix: str) -> set[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
    return {o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])}


def s3_metrics(s3, prefix: str) -> dict[int, float]:
    body = s3.client().get_object(Bucket=s3.bucket, Key=prefix + "logs/metrics.jsonl")["Body"].read().decode()
    return {(r := json.loads(line))["step"]: r["loss"] for line in body.splitlines()}


def test_launch_trains_on_a_pod_downloads_the_adapter_and_the_pod_ends(chain, s3, tmp_path):
    res = launch("--max-runtime", "10")
    assert res.returncode == 0, res.stdout + res.stderr
    (pod,) = chain.pods.values()
    assert (pod.status, pod.terminated_by) == ("TERMINATED", "pod")  # podside terminated its own pod...
    assert "terminating it" not in res.stdout  # ...and the CLI's backstop was not needed
    assert pod.api == "v2" and pod.request["gpu"]["id"] == "NVIDIA GeForce RTX 4090"  # REST v2 create
    ops = [r["op"] for r in chain.v2_requests]
    assert "createPod" in ops and "getPodLogs" in ops and "deletePod" in ops and chain.requests == []
    assert pod.image.startswith(os.environ["TRAINPOD_REGISTRY"] + "/")  # pushed to the registry, pulled by tag
    run_id = next(iter(json.loads(p.read_text())["run_id"] for p in (tmp_path / "state" / "runs").glob("*.json")))
    local = tmp_path / "downloads" / run_id
    assert f"outputs downloaded to {local}" in res.stderr
    for name in ("adapter_model.safetensors", "adapter_config.json", "metadata.json", "DONE"):
        assert (local / name).is_file(), name
    assert not (local / "checkpoints").exists()  # checkpoints stay in S3
    assert json.loads((local / "metadata.json").read_text())["training"]["steps"] == STEPS
    record = json.loads((tmp_path / "state" / "runs" / f"{run_id}.json").read_text())
    assert record["extra"]["downloaded"] == str(local)
    assert f"step {STEPS}/{STEPS}" in res.stdout  # the log was tailed from S3 while it ran
    # the closing summary: state, cost next to the launch estimate, where the outputs went, what next
    assert f"run {run_id}: succeeded" in res.stderr and f"  outputs     {local}" in res.stderr
    assert re.search(r"  cost        (\$[\d.]+|unknown) \(estimated \$[\d.]+\)", res.stderr), res.stderr
    assert f"trainpod runs report {run_id}" in res.stderr
    sweep = subprocess.run(cli("runs", "sweep", "--json"), capture_output=True, text=True, timeout=60)
    assert sweep.returncode == 0, sweep.stderr
    assert json.loads(sweep.stdout) == []


def test_killed_cli_leaves_a_pod_that_terminates_itself(chain, s3):
    proc = subprocess.Popen(cli("launch", "smoke-pod", "--remote", "runpod", "--yes", "--max-runtime", "10"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: any(p.started_at for p in chain.pods.values()), 180, "the pod to start")
        os.killpg(proc.pid, signal.SIGKILL)  # the laptop goes away mid-run
        proc.wait(timeout=10)
        (pod,) = chain.pods.values()
        wait_until(lambda: pod.status == "TERMINATED", 180, "the pod to terminate itself")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run_prefix = next(k for k in s3_keys(s3, "trainpod/runs/") if k.endswith("/DONE")).rpartition("/")[0]
    assert max(s3_metrics(s3, f"trainpod/runs/{run_prefix}/")) == STEPS
    sweep = subprocess.run(cli("runs", "sweep", "--json"), capture_output=True, text=True, timeout=60)
    assert sweep.returncode == 0, sweep.stderr
    assert json.loads(sweep.stdout) == []


def test_preempted_spot_pod_is_relaunched_and_resumes_from_s3(chain, s3):
    rc, out, err = launch_and_preempt(chain, s3, ["launch", "smoke-pod", "--remote", "runpod", "--yes", "--spot",
                                                  "--max-runtime", "10"], "checkpoints/step-00000002/manifest.json")
    assert rc == 0, out + err
    assert "preempted: relaunching" in out
    shown = [line for line in out.splitlines() if line[:2] == "20"]  # timestamped trainer log lines
    assert shown and len(shown) == len(set(shown)), out  # the relaunched pod's restored log is not shown twice
    first, second = chain.pods.values()
    assert first.api == second.api == "graphql" and first.terminate_after  # spot: the legacy GraphQL path
    assert (first.status, first.terminated_by) == ("TERMINATED", "account")  # the CLI, before relaunching
    assert (second.status, second.terminated_by) == ("TERMINATED", "pod")
    run_prefix = next(k for k in s3_keys(s3, "trainpod/runs/") if k.endswith("/DONE")).rpartition("/")[0]
    prefix = f"trainpod/runs/{run_prefix}/"
    log = s3.client().get_object(Bucket=s3.bucket, Key=prefix + "logs/train.log")["Body"].read().decode()
    assert "fetched checkpoint step-0000000" in log and "resumed from" in log
    assert max(s3_metrics(s3, prefix)) == STEPS  # total steps unchanged
    meta = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=prefix + "metadata.json")["Body"].read())
    assert meta["training"]["steps"] == STEPS


def test_max_runtime_stops_the_pod(chain, s3):
    res = launch("--max-runtime", "0.4", "--set", "max_steps=5000", "--set", "save_steps=1000")
    assert res.returncode == 3, res.stdout + res.stderr  # exitcodes.STOPPED: checkpointed, then stopped
    (pod,) = chain.pods.values()
    assert (pod.status, pod.terminated_by) == ("TERMINATED", "pod")  # the pod's own watchdog
    keys = s3_keys(s3, "trainpod/runs/")
    assert not any(k.endswith("/DONE") for k in keys)
    assert any(k.endswith("/manifest.json") and "/checkpoints/" in k for k in keys), sorted(keys)


def test_max_cost_below_the_estimate_rents_nothing(chain):
    res = launch("--max-cost", "0.001")
    assert res.returncode != 0
    assert "exceeds max_cost_usd" in res.stderr and "--max-cost" in res.stderr
    assert chain.pods == {}


def test_cpu_hardware_is_still_refused_without_the_stand_in_setting(chain, monkeypatch):
    monkeypatch.delenv("TRAINPOD_RUNPOD_CPU_STAND_IN")
    res = launch("--max-runtime", "10", "--dry-run")
    assert res.returncode != 0
    assert "is CPU-only" in res.stderr and "--remote docker" in res.stderr
    assert chain.pods == {}
