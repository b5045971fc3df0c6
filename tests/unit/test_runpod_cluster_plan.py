"""Multi-node presets on RunPod: ``launch --remote runpod --dry-run`` plans one Instant Cluster.

The request body is held to RunPod's vendored OpenAPI schema (``CreateClusterRequest``); the per-node line is
torchrun's c10d rendezvous on the variables RunPod gives every node; the estimate and the money guards are for
all nodes together.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.contract.openapi import Contract
from trainpod.launchcmd import expand_cluster_vars

SECRET = "s3cr3t/never+in/a-plan"


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", "s3://bucket/trainpod")
    monkeypatch.setenv("TRAINPOD_REGISTRY", "ghcr.io/acme")
    monkeypatch.setenv("TRAINPOD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)


def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainpod", "launch", *args, "--remote", "runpod", "--dry-run",
                           "--json"], capture_output=True, text=True, timeout=120)


def test_full_finetune_preset_plans_one_valid_cluster_request_and_one_node_line(env):
    res = dry_run("oracle-rauru-2x8h100-full")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    req = plan["provider_request"]
    assert plan["backend"] == "runpod-cluster" and (req["method"], req["path"]) == ("POST", "/v2/clusters")
    body = req["body"]
    assert Contract().errors("CreateClusterRequest", body) == []
    assert body["type"] == "TRAINING"
    assert body["compute"] == {"gpuTypeId": "NVIDIA H100 80GB HBM3", "gpuCountPerPod": 8, "podCount": 2}
    assert body["env"]["NCCL_SOCKET_IFNAME"] == "ens1"  # from the hardware table
    assert body["env"]["TRAINPOD_DEEPSPEED_CONFIG"] == "zero3"
    assert body["env"]["AWS_SECRET_ACCESS_KEY"] == "***" and SECRET not in res.stdout + res.stderr
    line = plan["command"]
    assert line[:4] == ["python", "-m", "trainpod.pod.supervisor", "--"]
    assert line[4:7] == ["python", "-m", "trainpod_trainer.launch"]  # the launch wrapper around torchrun
    for arg in ("--nproc-per-node=8", "--nnodes=2", "--node-rank=$NODE_RANK", "--rdzv-backend=c10d",
                "--rdzv-endpoint=$PRIMARY_ADDR:$PRIMARY_PORT", "--local-addr=$NODE_ADDR",
                "--rdzv-conf=join_timeout=600,is_host=$TRAINPOD_IS_PRIMARY"):
        assert arg in line, arg
    assert body["args"] == req["node_command"] and "'--node-rank=$NODE_RANK'" in body["args"]
    # $2.99/GPU-h x 8 GPUs x 2 nodes x 180 min, rounded up to the cent
    assert plan["estimated_cost_usd"] == 143.53
    assert plan["gpus"] == 16
    assert any(n.startswith("WARNING: DeepSpeed (zero3) checkpoints of a 2-node run keep only node 0's shards")
               for n in plan["notes"])  # a known gap, said before anything is rented


def test_lora_preset_is_plain_ddp_over_torchrun_on_a100_nodes(env):
    res = dry_run("oracle-rauru-2x8a100-lora")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    body = plan["provider_request"]["body"]
    assert Contract().errors("CreateClusterRequest", body) == []
    assert body["compute"] == {"gpuTypeId": "NVIDIA A100-SXM4-80GB", "gpuCountPerPod": 8, "podCount": 2}
    assert "TRAINPOD_DEEPSPEED_CONFIG" not in body["env"]
    assert not any("DeepSpeed" in n for n in plan["notes"])
    assert plan["spec"]["launch"]["launcher"] == "torchrun" and plan["spec"]["workload"]["config"]["finetune"] == "lora"


def test_max_cost_guards_the_whole_cluster_not_one_node(env):
    # one node for 180 min = $71.76 would pass $100; both nodes ($143.53) do not
    res = dry_run("oracle-rauru-2x8h100-full", "--max-cost", "100")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "for all 2 nodes exceeds max_cost_usd $100.00" in res.stderr and "--max-cost" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize(("args", "extra_env", "match"), [
    (("--spot",), {}, "no spot"),
    ((), {"TRAINPOD_REGISTRY_USERNAME": "me", "TRAINPOD_REGISTRY_PASSWORD": "pw"}, "cannot pull private images"),
])
def test_what_clusters_cannot_do_is_refused_before_spending(env, monkeypatch, args, extra_env, match):
    for k, v in extra_env.items():
        monkeypatch.setenv(k, v)
    res = dry_run("oracle-rauru-2x8a100-lora", *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert match in res.stderr and "Traceback" not in res.stderr


def test_node_values_fill_only_the_cluster_variables():
    argv = ["--node-rank=$NODE_RANK", "--rdzv-endpoint=${PRIMARY_ADDR}:$PRIMARY_PORT", "$HOME", "$NODE_RANKS",
            "is_host=$TRAINPOD_IS_PRIMARY"]
    env = {"NODE_RANK": "1", "PRIMARY_ADDR": "10.65.0.2", "PRIMARY_PORT": "29400", "HOME": "/root"}
    assert expand_cluster_vars(argv, env) == ["--node-rank=1", "--rdzv-endpoint=10.65.0.2:29400", "$HOME",
                                              "$NODE_RANKS", "is_host=false"]
    assert expand_cluster_vars(["is_host=$TRAINPOD_IS_PRIMARY"], {**env, "NODE_RANK": "0"}) == ["is_host=true"]
    with pytest.raises(KeyError, match="NODE_RANK"):
        expand_cluster_vars(["--node-rank=$NODE_RANK"], {})
