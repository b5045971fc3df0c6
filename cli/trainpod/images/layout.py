"""Where the image's sources are: the checkout, the Dockerfiles and locks, what a context holds, the bases."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
IMAGES_DIR = REPO_ROOT / "images"
LOCK_FILE = IMAGES_DIR / "requirements.lock"
# What the container needs: the trainer's deps and S3 access. The launcher-only SDKs (docker, runpod) stay out.
IMAGE_EXTRAS = ("train", "s3")
# Local base image bootstrapped by scripts/docker-up.sh (Debian + Python), for CPU and CUDA images alike: PyPI's
# torch wheels for Linux bring the CUDA runtime as nvidia-* wheels, so a CUDA image needs no nvidia/cuda base.
# CI on GitHub overrides it with python:3.11-slim.
DEFAULT_CPU_BASE = DEFAULT_BASE = "trainpod/base:bookworm"
CUDA_LOCK_FILE = IMAGES_DIR / "requirements.cuda.lock"
# What only the CUDA image adds (DeepSpeed, whose fused/CPU Adam ops are compiled into it).
CUDA_EXTRAS = ("deepspeed",)
# Source trees copied into the image (relative to the repo root) and what never goes in.
SOURCE_ROOTS = ("pyproject.toml", "README.md", "cli/trainpod", "trainer/trainpod_trainer", "profiles")
_EXCLUDE_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".git"}
_EXCLUDE_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".tmp", ".swp", "~")
FIXED_MTIME = 1_700_000_000  # any constant: the context must not depend on checkout time
