"""The container contract, written once: what the launcher and the code inside a container agree on.

Exit codes and the run state each one means, the ``TRAINPOD_*`` variable names, the marker files a run leaves
in its output, the paths inside a container, the table of secrets that may enter one, and the one function
that turns S3 settings into a container's environment. Backends, the pod-side supervisors, ``contrib`` and
the trainer import these names; none of them restates a value. Standard library only (``contrib`` and the
trainer import it inside images, where startup must stay cheap).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

# ---------------------------------------------------------------------------------------------- exit codes
EXIT_OK = 0
"""Finished (or the DONE marker was already there): outputs and DONE are written."""
EXIT_FAILED = 1
"""An unexpected error (a bug, a crash in a library): see logs/train.log."""
EXIT_BAD_INPUT = 2
"""The RunSpec, the dataset or the model reference is invalid; the message names what and where."""
EXIT_STOPPED = 3
"""SIGTERM/SIGINT (or a runtime limit) arrived: a complete checkpoint was written, then it exited; resumable."""
EXIT_MEMORY = 4
"""The memory guard or an out-of-memory error stopped training after a checkpoint; use a smaller profile."""
EXIT_KILLED = 137
"""SIGKILL (128 + 9): the grace period ran out, or the kernel's out-of-memory killer."""

EXIT_DETAIL = {
    EXIT_FAILED: "crashed: see `trainpod runs logs`",
    EXIT_BAD_INPUT: "bad input: see `trainpod runs logs`",
    EXIT_STOPPED: "stopped after a complete checkpoint",
    EXIT_MEMORY: "memory guard stopped training after a checkpoint; use a smaller profile",
    EXIT_KILLED: "killed (SIGKILL / out of memory)",
}

RunState = Literal["pending", "running", "succeeded", "failed", "cancelled", "preempted", "unknown"]
TERMINAL_STATES: tuple[RunState, ...] = ("succeeded", "failed", "cancelled")


def state_after_exit(code: int | None, *, done: bool, cancelled: bool, resumable: bool = True) -> RunState:
    """The one reading of an exit code: the run state a finished process means.

    ``done``: the DONE marker is there. ``cancelled``: `trainpod runs cancel` stopped it. ``resumable``: an
    :data:`EXIT_STOPPED` exit that nobody here asked for counts as ``preempted`` (stopped after a complete
    checkpoint by the platform, a signal or a runtime limit; relaunch or ``--resume`` continues it). A backend
    passes ``False`` where such a stop is not a preemption (a RunPod pod the watchdog stopped: its budget ended).
    """
    if code in (EXIT_OK, None) and done:
        return "succeeded"
    if cancelled:
        return "cancelled"
    if code == EXIT_STOPPED and resumable:
        return "preempted"
    return "failed"


def exit_detail(code: int | None) -> str:
    if code is None:
        return "process gone, no DONE"
    return EXIT_DETAIL.get(code) or ("exited 0 without a DONE marker" if code == EXIT_OK else f"exit code {code}")


def shell_exit_code(returncode: int) -> int:
    """Popen's -N (killed by signal N) becomes the shell's 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def record_exit_code(code: int) -> int:
    """Leave this rank's exit code where the launch wrapper (``trainpod_trainer.launch``) looks, when it runs under
    one (``$TRAINPOD_EXIT_CODE_DIR``): torchrun alone turns every non-zero code into 1. Returns ``code``."""
    directory = os.environ.get(ENV_EXIT_CODE_DIR)
    if directory:
        rank = os.environ.get("RANK", "0")
        tmp = Path(directory) / f".rank-{rank}.tmp"
        tmp.write_text(str(code))
        tmp.replace(Path(directory) / f"rank-{rank}")
    return code


# ---------------------------------------------------------------------------------------------- variables
ENV_RUN_SPEC = "TRAINPOD_RUN_SPEC"
ENV_RUN_ID = "TRAINPOD_RUN_ID"
ENV_GIT_COMMIT = "TRAINPOD_GIT_COMMIT"
ENV_DATA_DIR = "TRAINPOD_DATA_DIR"
ENV_OUTPUT_DIR = "TRAINPOD_OUTPUT_DIR"
ENV_RESUME_DIR = "TRAINPOD_RESUME_DIR"
ENV_PREVIOUS_OUTPUT = "TRAINPOD_PREVIOUS_OUTPUT"
ENV_STOP_GRACE = "TRAINPOD_STOP_GRACE_SECONDS"
ENV_WORK_DIR = "TRAINPOD_WORK_DIR"
ENV_LOG_UPLOAD = "TRAINPOD_LOG_UPLOAD_SECONDS"
ENV_SYNC_INTERVAL = "TRAINPOD_SYNC_INTERVAL"
ENV_LOG_SYNC_INTERVAL = "TRAINPOD_LOG_SYNC_INTERVAL"
ENV_EXIT_CODE_DIR = "TRAINPOD_EXIT_CODE_DIR"
ENV_DEEPSPEED_CONFIG = "TRAINPOD_DEEPSPEED_CONFIG"
ENV_PROFILE = "TRAINPOD_PROFILE"
ENV_YES = "TRAINPOD_YES"  # `launch --yes`: launch on a paid backend without asking

# TRAINPOD_* names that belong to the contract, not to Settings (unknown-variable warnings skip them)
RUNTIME_VARS = frozenset({
    ENV_RUN_SPEC, ENV_RUN_ID, ENV_GIT_COMMIT, ENV_DATA_DIR, ENV_OUTPUT_DIR, ENV_RESUME_DIR, ENV_PREVIOUS_OUTPUT,
    ENV_STOP_GRACE, ENV_WORK_DIR, ENV_LOG_UPLOAD, ENV_SYNC_INTERVAL, ENV_LOG_SYNC_INTERVAL, ENV_EXIT_CODE_DIR,
    ENV_DEEPSPEED_CONFIG, ENV_PROFILE, ENV_YES,
    # read by the image or `trainpod build`, not by settings
    "TRAINPOD_HARDWARE", "TRAINPOD_VERSION", "TRAINPOD_HEALTH_MAX_AGE", "TRAINPOD_BUILD_CA_BUNDLE",
    "TRAINPOD_BUILD_WHEELHOUSE",
})

# ---------------------------------------------------------------------------------------------- markers
DONE = "DONE"
"""Written last, only after a successful run's outputs are complete (in S3: uploaded last)."""
POD_EXIT = "POD_EXIT"
"""The pod supervisor's record of how the child ended (pod id, exit code, reason): the restart guard."""

POD_STUCK = "POD_STUCK"
"""Left by a pod that could not terminate itself (it stopped instead): `trainpod runs sweep` acts on it."""


def node_exit_marker(node_rank: int) -> str:
    """The exit marker of a cluster node (node 0's is the single pod's :data:`POD_EXIT`)."""
    return POD_EXIT if node_rank == 0 else f"{POD_EXIT}.node-{node_rank}"


def node_log(node_rank: int) -> str:
    """Where a cluster node's supervisor keeps the output of its launch line (torchrun and every rank on that
    node), relative to the run's output: readable after the cluster is gone (``runs logs RUN --node N``)."""
    return f"logs/node-{node_rank}.log"


STATUS_JSON = "status.json"
"""Progress (step, loss) while running; exit code and reason once exited."""
LOGS_DIR = "logs"
TRAIN_LOG = "logs/train.log"
CHECKPOINTS_DIR = "checkpoints"

# ---------------------------------------------------------------------------------------------- container paths
DATA_TARGET = "/data"
OUTPUT_TARGET = "/output"
CACHE_TARGET = "/cache/huggingface"
PREVIOUS_TARGET = "/previous"
PROJECT_TARGET = "/opt/project"
WORKSPACE = "/workspace"
POD_OUTPUT = "/workspace/output"  # a pod's local scratch output; the run's output is its S3 mirror
IMAGE_UID = 1000  # the images' `trainpod` user (images/Dockerfile.*)

# ---------------------------------------------------------------------------------------------- secrets
# Every secret setting: field -> the environment name it is read from / handed over as.
SECRETS = {
    "runpod_api_key": "RUNPOD_API_KEY",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "hf_token": "HF_TOKEN",
    "wandb_api_key": "WANDB_API_KEY",
    "registry_password": "TRAINPOD_REGISTRY_PASSWORD",
    "registry_pull_password": "TRAINPOD_REGISTRY_PULL_PASSWORD",
}
# The secrets a container may receive (the least it needs): never the RunPod account key or registry password.
CONTAINER_SECRETS = ("aws_secret_access_key", "aws_session_token", "hf_token", "wandb_api_key")
# A process on this machine (--remote local) reads S3 with this machine's credentials already.
LOCAL_SECRETS = ("hf_token", "wandb_api_key")


def secret_env_names(secrets: Mapping[str, str], fields: tuple[str, ...] = CONTAINER_SECRETS) -> list[str]:
    """The environment names of the secrets that are set (``Settings.secrets()``), sorted: what a plan shows."""
    return sorted(SECRETS[f] for f in fields if secrets.get(f))


def secret_env_values(names: list[str], secrets: Mapping[str, str]) -> dict[str, str]:
    """The values for a plan's ``secret_env`` names, filled at submit and never earlier."""
    by_env = {env: field for field, env in SECRETS.items()}
    return {name: secrets[by_env[name]] for name in names if by_env.get(name) in secrets}


class S3Endpoint(Protocol):
    """The S3 settings a container is told about (``trainpod.settings.Settings`` has them)."""

    s3_endpoint_url: str | None
    aws_region: str | None
    aws_access_key_id: str | None


def s3_env(settings: S3Endpoint, *, key_id: bool = True) -> dict[str, str]:
    """S3 location settings as a container's environment (non-secret; the secret key travels separately).

    The standard AWS names: boto3 inside the image and a custom job's own S3 code both read them, and
    ``Settings`` accepts them as aliases. ``key_id=False`` where the container gets its own credentials
    (a pod's run-scoped STS session, trainpod.credentials) instead of this machine's key."""
    env = {}
    for value, name in ((settings.s3_endpoint_url, "AWS_ENDPOINT_URL"), (settings.aws_region, "AWS_REGION"),
                        (settings.aws_access_key_id if key_id else None, "AWS_ACCESS_KEY_ID")):
        if value:
            env[name] = value
    return env
