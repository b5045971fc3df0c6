"""The run registry as `trainpod runs ...` uses it: run ids and their prefixes."""

from __future__ import annotations

import subprocess
import sys

from trainpod.backends.base import RunHandle
from trainpod.runs import RunRegistry
from trainpod.settings import load_settings


def _record(registry: RunRegistry, run_id: str, tmp_path) -> None:
    registry.save(RunHandle(run_id=run_id, backend="local", preset="smoke", provider_id="0",
                            output=str(tmp_path / run_id), created="2026-01-01T00:00:00+00:00"))


def test_a_prefix_of_several_runs_is_ambiguous_and_lists_them(tmp_path):
    registry = RunRegistry(load_settings().state_path)
    ids = ["smoke-20260101-000000-aaaaaa", "smoke-20260101-000000-bbbbbb", "other-20260101-000000-cccccc"]
    for run_id in ids:
        _record(registry, run_id, tmp_path)
    res = subprocess.run([sys.executable, "-m", "trainpod", "runs", "status", "smoke-2026"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "ambiguous: 2 runs match 'smoke-2026'" in res.stderr
    assert ids[0] in res.stderr and ids[1] in res.stderr and ids[2] not in res.stderr
    assert "Traceback" not in res.stderr
    # a unique prefix still resolves, and an unknown one is still "no run"
    assert registry.get("smoke-20260101-000000-b").run_id == ids[1]
    res = subprocess.run([sys.executable, "-m", "trainpod", "runs", "cancel", "smoke-2026"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "ambiguous: 2 runs match" in res.stderr
    res = subprocess.run([sys.executable, "-m", "trainpod", "runs", "status", "nope"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no run 'nope'" in res.stderr
