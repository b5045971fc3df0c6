"""The trainer launch line for every launch shape (pure function; no processes started)."""

from __future__ import annotations

import pytest

from trainpod.config import load_catalog
from trainpod.launchcmd import trainer_command
from trainpod.launcher import launch_shape
from trainpod.spec import RunSpec, StorageURIs, new_run_id, utcnow_iso


def spec_for(preset: str, **overrides) -> RunSpec:
    cfg = load_catalog(use_cwd=False).resolve(preset, overrides)
    return RunSpec(run_id=new_run_id(preset), created=utcnow_iso(), remote="local", config=cfg,
                   storage=StorageURIs(dataset=cfg.dataset.path, output="/out"), launch=launch_shape(cfg))


def test_single_process_is_plain_python():
    argv, env = trainer_command(spec_for("smoke"), spec_path="/w/spec.json", cpu_count=8)
    assert argv == ["python", "-m", "trainpod_trainer", "--spec", "/w/spec.json"]
    assert env == {"OMP_NUM_THREADS": "8"}


def test_single_gpu_has_no_cpu_thread_pinning_and_reads_spec_from_env():
    argv, env = trainer_command(spec_for("oracle-rauru-cloud"))
    assert argv == ["python", "-m", "trainpod_trainer"]
    assert env == {}


def test_cpu_ranks_use_torchrun_and_split_cores():
    spec = spec_for("smoke-ddp")
    assert spec.launch.launcher == "torchrun" and spec.launch.nproc_per_node == 2
    argv, env = trainer_command(spec, spec_path="s.json", cpu_count=2)
    assert argv == ["python", "-m", "trainpod_trainer.launch", "--nproc-per-node=2", "--standalone",
                    "--max-restarts=0", "-m", "trainpod_trainer", "--spec", "s.json"]
    assert env["OMP_NUM_THREADS"] == "1"


def test_two_4090s_disable_p2p_and_ib():
    argv, env = trainer_command(spec_for("oracle-rauru-2x4090"))
    assert "--nproc-per-node=2" in argv and "--standalone" in argv
    assert env == {"NCCL_P2P_DISABLE": "1", "NCCL_IB_DISABLE": "1"}


def test_four_a100s_with_deepspeed_zero2_go_through_torchrun():
    spec = spec_for("oracle-rauru-4xa100-full")
    assert spec.launch.launcher == "deepspeed" and spec.launch.nproc_per_node == 4
    argv, env = trainer_command(spec)
    assert argv[:5] == ["python", "-m", "trainpod_trainer.launch", "--nproc-per-node=4", "--standalone"]
    assert env["TRAINPOD_DEEPSPEED_CONFIG"] == "zero2"
    assert "NCCL_P2P_DISABLE" not in env  # NVLink on SXM A100s: keep P2P


def test_deepspeed_on_cpu_selects_the_cpu_accelerator():
    argv, env = trainer_command(spec_for("smoke-ddp", deepspeed="zero2"), cpu_count=4)
    assert env["DS_ACCELERATOR"] == "cpu" and env["OMP_NUM_THREADS"] == "2"


def test_multi_node_uses_c10d_rendezvous():
    spec = spec_for("smoke-ddp", hardware={"nnodes": 2})
    assert spec.launch.nnodes == 2
    argv0, _ = trainer_command(spec, node_rank=0, master_addr="127.0.0.1")
    argv1, _ = trainer_command(spec, node_rank=1, master_addr="127.0.0.1")
    for rank, argv in ((0, argv0), (1, argv1)):
        assert "--nnodes=2" in argv and f"--node-rank={rank}" in argv
        assert "--rdzv-backend=c10d" in argv and "--rdzv-endpoint=127.0.0.1:29500" in argv
        assert f"--rdzv-id={spec.run_id}" in argv and "--standalone" not in argv
    with pytest.raises(ValueError, match="node_rank 2 outside"):
        trainer_command(spec, node_rank=2)


def test_runpod_pod_command_wraps_the_multi_gpu_launch_line():
    from trainpod.backends.runpod import RunPodBackend
    from trainpod.settings import Settings

    spec = spec_for("oracle-rauru-2x4090").model_copy(update={
        "remote": "runpod", "image": "registry.example/trainpod:cuda-abc",
        "storage": StorageURIs(dataset="s3://d/x", output="s3://b/runs/r")})
    plan = RunPodBackend().plan(spec, Settings(storage_uri="s3://b"))
    assert plan.command[:4] == ["python", "-m", "trainpod.pod.supervisor", "--"]
    assert plan.command[4:9] == ["python", "-m", "trainpod_trainer.launch", "--nproc-per-node=2", "--standalone"]
    assert plan.env["NCCL_P2P_DISABLE"] == "1" and plan.gpus == 2
    assert "trainpod_trainer.launch" in plan.provider_request["body"]["args"]


# ------------------------------------------------------------------ dry-run plans of every multi-process preset
MULTI = {  # preset -> (processes per node, DeepSpeed config)
    "smoke-ddp": (2, None),
    "smoke-zero2": (2, "zero2"),
    "oracle-rauru-2x4090": (2, None),
    "oracle-rauru-4xa100-full": (4, "zero2"),
}


CASES = [(p, b) for p in sorted(MULTI) for b in ("local", "docker", "runpod")
         if not (b == "runpod" and p.startswith("smoke"))]  # RunPod refuses CPU presets (test_runpod_plan)


@pytest.mark.parametrize(("preset", "backend"), CASES)
def test_dry_run_plans_start_torchrun_for_every_multi_process_preset(preset, backend, tmp_path):
    """What `launch --dry-run` prints: one torchrun line with every rank of the profile, DeepSpeed
    named only through the environment (the trainer builds the engine), on every backend."""
    from trainpod.backends import get_backend
    from trainpod.settings import Settings

    nproc, ds_name = MULTI[preset]
    spec = spec_for(preset)
    cuda = spec.config.hardware.device == "cuda"
    if backend == "local":
        spec = spec.model_copy(update={"storage": StorageURIs(dataset=str(tmp_path), output=str(tmp_path / "o"))})
    elif backend == "docker":
        spec = spec.model_copy(update={"remote": "docker", "image": "registry.example/trainpod:x", "storage":
                                       StorageURIs(dataset=str(tmp_path), output=str(tmp_path / "o"))})
    else:
        spec = spec.model_copy(update={"remote": "runpod", "image": "registry.example/trainpod:x",
                                       "storage": StorageURIs(dataset="s3://d/x", output="s3://b/runs/r")})
    plan = get_backend(backend).plan(spec, Settings(storage_uri="s3://b", state_dir=str(tmp_path / "state")))
    cmd = plan.command
    i = next(k for k, a in enumerate(cmd) if a in ("torch.distributed.run", "trainpod_trainer.launch"))
    assert cmd[i + 1 : i + 3] == [f"--nproc-per-node={nproc}", "--standalone"]
    assert cmd[cmd.index("-m", i) + 1] == "trainpod_trainer"
    assert plan.env.get("TRAINPOD_DEEPSPEED_CONFIG") == ds_name
    if cuda:
        assert "DS_ACCELERATOR" not in plan.env
        assert plan.gpus == (0 if backend == "local" else nproc)  # local runs on the host's own GPUs
    elif ds_name:
        assert plan.env["DS_ACCELERATOR"] == "cpu"


def test_multi_node_is_refused_by_single_node_backends_before_any_money_is_spent():
    from trainpod.backends import get_backend
    from trainpod.errors import UnsupportedError
    from trainpod.settings import Settings

    spec = spec_for("smoke-ddp", hardware={"nnodes": 2})
    for backend in ("local", "docker"):
        with pytest.raises(UnsupportedError, match="node"):
            get_backend(backend).plan(spec, Settings())


def test_docker_multi_node_dry_run_prints_one_container_per_node():
    from trainpod.backends.docker import DockerBackend
    from trainpod.errors import UnsupportedError
    from trainpod.settings import Settings

    spec = spec_for("smoke-ddp", hardware={"nnodes": 2}).model_copy(update={
        "image": "trainpod:cpu-abc", "storage": StorageURIs(dataset="s3://d/x", output="s3://b/runs/r")})
    plan = DockerBackend(uid=1000, gid=1000, cpus=4).plan(spec, Settings(master_addr="node0.cluster.example"))
    nodes = plan.provider_request["nodes"]
    assert [n["node_rank"] for n in nodes] == [0, 1]
    for rank, node in enumerate(nodes):
        argv = node["container"]["command"]
        assert f"--node-rank={rank}" in argv and "--rdzv-endpoint=node0.cluster.example:29500" in argv
        assert node["container"]["name"] == f"{spec.run_id}-node{rank}"
        assert "--network host" in node["docker_run"] and f"--node-rank={rank}" in node["docker_run"]
    assert any("2 nodes rendezvous at node0.cluster.example:29500" in n for n in plan.notes)
    with pytest.raises(UnsupportedError, match="needs 2 nodes"):
        DockerBackend().submit(plan, Settings())


def test_runpod_refuses_a_dataset_the_pod_cannot_read():
    from trainpod.backends.runpod import RunPodBackend
    from trainpod.errors import UnsupportedError
    from trainpod.settings import Settings

    spec = spec_for("oracle-rauru-2x4090").model_copy(update={
        "remote": "runpod", "image": "registry.example/trainpod:cuda-abc",
        "storage": StorageURIs(dataset="/home/me/data", output="s3://b/runs/r")})
    with pytest.raises(UnsupportedError, match=r"local path \(/home/me/data\) the pod cannot read") as info:
        RunPodBackend().plan(spec, Settings(storage_uri="s3://b"))
    assert "trainpod data push /home/me/data s3://" in info.value.message
