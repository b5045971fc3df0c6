"""The workload's command line and environment for a launch shape — pure functions for all backends.

    python:     python -m trainpod_trainer --spec FILE
    torchrun:   (trainpod_trainer.launch →) torchrun --nproc-per-node N [--standalone | --nnodes M --node-rank R --rdzv-backend c10d
                --rdzv-endpoint HOST:PORT --rdzv-id RUN] -m trainpod_trainer --spec FILE
    deepspeed:  the same torchrun line; the trainer builds the DeepSpeed engine from the preset's
                profiles/deepspeed/NAME.json.

Why torchrun for DeepSpeed too: DeepSpeed's own multi-node launcher fans out over pdsh/ssh with a
hostfile, and a training job must never depend on SSH between pods (PEERS.md #6). torchrun's c10d
rendezvous needs only one reachable TCP port, gives the same RANK/LOCAL_RANK/WORLD_SIZE contract, and
forwards SIGTERM to every rank. DeepSpeed supports being started this way (``deepspeed.init_distributed``
reads the torchrun environment).
"""

from __future__ import annotations

import os
from pathlib import Path

from trainpod.contract import ENV_DEEPSPEED_CONFIG
from trainpod.errors import ConfigError
from trainpod.spec import CommandWorkload, RunSpec

TRAINER_MODULE = "trainpod_trainer"
# torchrun behind a thin wrapper that forwards SIGTERM once and exits with the trainer's own code
# (torchrun alone turns "stopped after a checkpoint" (3) into a generic 1): trainpod_trainer/launch.py
LAUNCH_WRAPPER = "trainpod_trainer.launch"
# the supervisor a custom job's command runs under (pull data, resume dir, mirror to S3, DONE last)
JOB_SUPERVISOR = "trainpod.pod.jobrun"

# RunPod Instant Clusters run one container command on every node and give each node its place in these
# variables (RunPod's docs). A cluster's launch line refers to them as ``$NAME``; the pod supervisor
# (trainpod.pod.supervisor) puts the node's values in before it starts the line: no shell is involved.
CLUSTER_VARS = ("NODE_RANK", "PRIMARY_ADDR", "PRIMARY_PORT", "NODE_ADDR", "NUM_NODES", "NUM_TRAINERS",
                "TRAINPOD_IS_PRIMARY")
# derived by the supervisor, not set by RunPod: whether this node hosts the rendezvous store (node 0). torchrun's
# own guess (does PRIMARY_ADDR belong to this machine?) is right on separate machines but not when the nodes
# share an address; saying it is never wrong.
IS_PRIMARY = "TRAINPOD_IS_PRIMARY"


def trainer_command(
    spec: RunSpec,
    *,
    spec_path: str | None = None,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    python: str = "python",
    cpu_count: int | None = None,
    cluster: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """Return ``(argv, env)`` that start the trainer for ``spec`` on one node.

    ``spec_path`` is where the spec file is inside the target (container path, local path); with
    ``None`` the trainer reads ``$TRAINPOD_RUN_SPEC``. ``env`` holds only non-secret variables.
    ``cluster``: the one line every node of a RunPod Instant Cluster runs: ``--node-rank=$NODE_RANK``,
    ``--rdzv-endpoint=$PRIMARY_ADDR:$PRIMARY_PORT``, ``--local-addr=$NODE_ADDR`` (see :data:`CLUSTER_VARS`) and a rendezvous
    ``join_timeout`` from the hardware table, so a node that never starts fails the run in bounded time.
    """
    shape = spec.launch
    hw = spec.config.hardware
    tail = ["--spec", spec_path] if spec_path else []
    env: dict[str, str] = dict(hw.env)
    nproc, nnodes = shape.nproc_per_node, shape.nnodes
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"node_rank {node_rank} outside 0..{nnodes - 1}")

    if hw.device == "cpu":
        # one rank per process shares the cores: without this every rank spawns a thread per core
        cores = cpu_count or os.cpu_count() or 1
        env.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    if spec.config.deepspeed:
        env[ENV_DEEPSPEED_CONFIG] = spec.config.deepspeed
        if hw.device == "cpu":
            env.setdefault("DS_ACCELERATOR", "cpu")

    if shape.launcher == "python" and nproc == 1 and nnodes == 1:
        return [python, "-m", TRAINER_MODULE, *tail], env
    return distributed_argv(spec, ["-m", TRAINER_MODULE, *tail], node_rank=node_rank, master_addr=master_addr,
                            python=python, cluster=cluster), env


def distributed_argv(spec: RunSpec, target: list[str], *, node_rank: int = 0, master_addr: str = "127.0.0.1",
                     python: str = "python", cluster: bool = False) -> list[str]:
    """torchrun behind the launch wrapper (SIGTERM forwarded once, the workload's exit code kept) for ``target``
    (``-m MODULE ...`` or ``SCRIPT ...``): the one distributed launch line, for the trainer and for commands."""
    shape = spec.launch
    hw = spec.workload.hardware
    argv = [python, "-m", LAUNCH_WRAPPER, f"--nproc-per-node={shape.nproc_per_node}"]
    if shape.nnodes == 1:
        argv += ["--standalone"]
    elif cluster:
        argv += [
            f"--nnodes={shape.nnodes}",
            "--node-rank=$NODE_RANK",
            "--rdzv-backend=c10d",
            "--rdzv-endpoint=$PRIMARY_ADDR:$PRIMARY_PORT",
            f"--rdzv-id={spec.run_id}",
            f"--rdzv-conf=join_timeout={hw.rendezvous_timeout_s},is_host=${IS_PRIMARY}",
            # the address this node's workers are reached at: the cluster network's, not whatever the
            # hostname resolves to (eth0 on RunPod, which is for internet traffic only)
            "--local-addr=$NODE_ADDR",
        ]
    else:
        argv += [
            f"--nnodes={shape.nnodes}",
            f"--node-rank={node_rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={master_addr}:{shape.master_port}",
            f"--rdzv-id={spec.run_id}",
        ]
    # torchrun's default is to restart failed workers 0 times; keep it explicit: a crash is a crash,
    # resume is our job (from the latest complete checkpoint), not a silent restart loop.
    return [*argv, "--max-restarts=0", *target]


def job_argv(spec: RunSpec, python: str = "python") -> list[str]:
    """A custom job's own command under its launcher (what the job supervisor starts in ``project_dir``).

    torchrun and deepspeed both start through the launch wrapper (no SSH fan-out, see above); a DeepSpeed
    script initialises from the torchrun environment. The script records its exit code for the wrapper with
    :func:`trainpod.pod.contrib.finish`, so "stopped after a checkpoint" (3) survives torchrun."""
    work = spec.workload
    if not isinstance(work, CommandWorkload):
        raise ConfigError(f"run {spec.run_id} runs the built-in trainer, not a command")
    if spec.launch.launcher == "python":
        return list(work.command)
    if Path(work.command[0]).name not in ("python", "python3"):
        raise ConfigError(f"jobs.{work.name}: launcher '{spec.launch.launcher}' needs command = ['python', SCRIPT, ...]",
                          "torchrun starts a Python script or `-m module` once per process")
    return distributed_argv(spec, work.command[1:], python=python)


def workload_command(spec: RunSpec, *, spec_path: str | None = None, node_rank: int = 0,
                     master_addr: str = "127.0.0.1", python: str = "python",
                     cpu_count: int | None = None, cluster: bool = False) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` that start the run's workload: the trainer's launch line, or the job supervisor, which runs
    the job's command (:func:`job_argv`) with the TRAINPOD_* contract. Both read the spec from ``spec_path`` or
    ``$TRAINPOD_RUN_SPEC``."""
    if isinstance(spec.workload, CommandWorkload):
        job_argv(spec)  # refuse a launcher/command mismatch in the plan, before anything starts
        return [python, "-m", JOB_SUPERVISOR, *(["--spec", spec_path] if spec_path else [])], {}
    return trainer_command(spec, spec_path=spec_path, node_rank=node_rank, master_addr=master_addr, python=python,
                           cpu_count=cpu_count, cluster=cluster)


def expand_cluster_vars(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` with ``$NAME``/``${NAME}`` of :data:`CLUSTER_VARS` replaced by this node's values (only those
    names; anything else is left as it is). A name the node lacks is an error naming it."""
    import re

    env = dict(env)
    if env.get("NODE_RANK"):
        env[IS_PRIMARY] = "true" if env["NODE_RANK"] == "0" else "false"

    def value(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if not env.get(name):
            raise KeyError(name)
        return env[name]

    pattern = re.compile(r"\$\{(" + "|".join(CLUSTER_VARS) + r")\}|\$(" + "|".join(CLUSTER_VARS) + r")\b")
    return [pattern.sub(value, arg) for arg in argv]
