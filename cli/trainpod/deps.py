"""Optional dependencies: which feature needs which Python module, installed by which extra — one table.

The base install (``pip install trainpod``) is the CLI only. Everything heavier comes from an extra, and a
command that needs a missing one refuses with exit 2 *before anything starts*, naming the package and the
install command, instead of failing half-way with a traceback (or, for DeepSpeed, one per rank).

Presence is checked with :func:`importlib.util.find_spec`, which locates a module without importing it, so
the check costs a few stat calls and keeps torch, deepspeed, boto3, docker and runpod off the CLI's import
path. Whether this machine can run CUDA is read from the driver's files (``/proc/driver/nvidia``,
``/dev/nvidia*``), never by importing torch.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from trainpod.errors import UnsupportedError


@dataclass(frozen=True)
class Need:
    package: str              # what is missing, in words
    modules: tuple[str, ...]  # top-level modules that must be importable
    extra: str                # the trainpod extra that installs them
    why: str                  # what the user asked for that needs it
    note: str = ""            # another way out, added to the hint


# feature -> what it needs and which extra installs it (pyproject.toml's [project.optional-dependencies])
NEEDS: dict[str, Need] = {
    "train": Need("the trainer's packages", ("torch", "transformers", "peft", "safetensors", "psutil"), "train",
                  "the trainer runs on this machine (--remote local, trainpod evaluate)",
                  "on a CPU-only machine pin the CPU wheel as the README does: pip install 'torch==2.13.0' ..."),
    "deepspeed": Need("DeepSpeed", ("deepspeed",), "deepspeed", "the preset trains with DeepSpeed on this machine"),
    "s3": Need("boto3", ("boto3",), "s3", "s3:// datasets, outputs and RunPod runs go through S3"),
    "docker": Need("the docker SDK", ("docker",), "docker", "--remote docker and RunPod runs build images on the "
                   "local engine"),
    "runpod": Need("the runpod SDK and httpx", ("runpod", "httpx"), "runpod",
                   "--remote runpod talks to RunPod's API (REST v2 over httpx; spot pods: GraphQL via the SDK)"),
    "tracking": Need("wandb", ("wandb",), "tracking", "WANDB_API_KEY or WANDB_MODE is set",
                     "or set WANDB_MODE=disabled to train without W&B"),
}


def module_missing(name: str) -> bool:
    """True when ``name`` cannot be imported here (found without importing it)."""
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a parent package that is missing, or a broken __spec__
        return True


def missing(features: Iterable[str]) -> dict[str, list[str]]:
    """feature -> its modules that are not installed (features with nothing missing are left out)."""
    out: dict[str, list[str]] = {}
    for feature in dict.fromkeys(features):
        gone = [m for m in NEEDS[feature].modules if module_missing(m)]
        if gone:
            out[feature] = gone
    return out


def install_command(features: Iterable[str]) -> str:
    extras = ",".join(dict.fromkeys(NEEDS[f].extra for f in features))
    return f"pip install 'trainpod[{extras}]'"


def problem(features: Iterable[str]) -> tuple[str, str] | None:
    """(message, hint) naming every missing package and the one command that installs them, or None."""
    gone = missing(features)
    if not gone:
        return None
    parts = [f"{NEEDS[f].package} not installed (no module {', '.join(repr(m) for m in mods)}): {NEEDS[f].why}"
             for f, mods in gone.items()]
    message = "; ".join(parts) + f" [python: {sys.executable}]"
    hint = "; ".join([install_command(gone), *(NEEDS[f].note for f in gone if NEEDS[f].note)])
    return message, hint


def require(*features: str, context: str = "") -> None:
    """Refuse (exit 2) unless every module the features need can be imported."""
    found = problem(features)
    if found is not None:
        message, hint = found
        raise UnsupportedError(f"{context}: {message}" if context else message, hint)


def wandb_requested(environ: Mapping[str, str] | None = None) -> bool:
    """W&B is opt-in: on when WANDB_API_KEY or WANDB_MODE is set, unless WANDB_MODE=disabled."""
    env = os.environ if environ is None else environ
    return bool(env.get("WANDB_API_KEY") or env.get("WANDB_MODE")) and env.get("WANDB_MODE") != "disabled"


def features_for(remote: str, *, uris: Iterable[str | None] = (), builtin_trainer: bool = False,
                 deepspeed: bool = False) -> list[str]:
    """What a launch on ``remote`` needs on THIS machine.

    The trainer's own packages (torch, DeepSpeed, wandb) are needed here only for ``--remote local``;
    docker and runpod runs get them from the image.
    """
    features: list[str] = []
    if any(u and str(u).startswith("s3://") for u in uris) or remote == "runpod":
        features.append("s3")  # a RunPod run's outputs, logs and status live in S3
    if remote in ("docker", "runpod"):
        features.append("docker")  # the image is built (and for RunPod pushed) on the local engine
    if remote == "runpod":
        features.append("runpod")
    if remote == "local" and builtin_trainer:
        features.append("train")
        if deepspeed:
            features.append("deepspeed")
        if wandb_requested():
            features.append("tracking")
    return features


# ------------------------------------------------------------------------------------- hardware
def cuda_visible() -> bool:
    """Whether this machine has an NVIDIA GPU a local process can use, read from the driver's files."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        if gpus.is_dir() and any(gpus.iterdir()):
            return True
    except OSError:
        pass
    return Path("/dev/nvidia0").exists()


def hardware_problem(hardware_name: str, device: str, remote: str) -> tuple[str, str] | None:
    """A hardware profile this backend cannot run on this machine: (message, hint naming the backend), or None."""
    if remote == "local" and device == "cuda" and not cuda_visible():
        return (f"hardware '{hardware_name}' is a CUDA profile, and this machine has no NVIDIA GPU "
                "(no /proc/driver/nvidia/gpus, no /dev/nvidia0)",
                "launch it with --remote runpod (a GPU pod), or set `remote = \"runpod\"` in the preset; "
                "for a CPU run here pick a CPU preset such as smoke")
    return None


def check_preset(preset: str, remote: str, *, device: str, hardware_name: str, deepspeed: bool,
                 uris: Iterable[str | None]) -> None:
    """Refuse (exit 2) a built-in preset that cannot start on ``remote`` from this machine: hardware the
    backend cannot run here, then every missing package. Shared by ``validate`` and ``launch``."""
    found = hardware_problem(hardware_name, device, remote)
    if found is None:
        found = problem(features_for(remote, uris=uris, builtin_trainer=True, deepspeed=deepspeed))
    if found is not None:
        message, hint = found
        raise UnsupportedError(f"{preset} --remote {remote}: {message}", hint)
