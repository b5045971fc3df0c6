"""Shared test setup.

Fixture modules live in ``tests/fixtures/*.py`` (one per real component: S3 server, Docker engine,
registry, fake RunPod API...) and are loaded as plugins automatically, so each area owns its file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (ROOT / "tests" / "fixtures").glob("*.py") if not p.name.startswith("_")
)


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory, monkeypatch):
    """Every test gets its own state dir and output dir; no real credentials leak in."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("TRAINPOD_STATE_DIR", str(state))
    for name in list(os.environ):
        if name.startswith("TRAINPOD_") and name not in ("TRAINPOD_STATE_DIR",):
            monkeypatch.delenv(name, raising=False)
    for name in ("RUNPOD_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_PROFILE", "HF_TOKEN", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRAINPOD_STATE_DIR", str(state))
    yield


@pytest.fixture
def repo_root() -> Path:
    return ROOT
