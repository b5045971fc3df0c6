"""A finished RunPod run keeps its duration and is left alone by `runs cancel` (loopback fake API + moto)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from trainpod import storage
from trainpod.backends.runpod import RunPodBackend
from trainpod.config.loader import load_catalog
from trainpod.runs import RunRegistry
from trainpod.settings import load_settings
from trainpod.spec import RunSpec, StorageURIs

pytestmark = [pytest.mark.runpod, pytest.mark.s3]


def test_a_finished_pod_run_reports_how_long_it_trained_and_is_not_cancelled(s3, fake_runpod, monkeypatch):
    backend = RunPodBackend()
    backend.poll_s, backend.start_timeout_s = 0.05, 5.0
    run_id = "rp-state-20260101-000000-abc123"
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud")
    spec = RunSpec(run_id=run_id, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="registry.local/trainpod:cuda-0123456789ab",
                   storage=StorageURIs(dataset=cfg.dataset.path, output=s3.uri(f"runs/{run_id}")))
    settings = load_settings(storage_uri=s3.uri())
    handle = backend.submit(backend.plan(spec, settings), settings)
    storage.write_bytes(handle.output + "/status.json", json.dumps(
        {"state": "succeeded", "step": 30, "exit_code": 0, "elapsed_s": 42.5}).encode())
    storage.write_bytes(handle.output + "/DONE", b"{}")
    first = backend.status(handle)
    time.sleep(1.2)
    second = backend.status(handle)
    assert first.state == second.state == "succeeded"
    assert first.elapsed_s == second.elapsed_s == 42.5  # the run's training time, not the pod's growing uptime

    record = RunRegistry(settings.state_path).path(run_id)
    before, pod_status = record.read_bytes(), fake_runpod.pods[handle.provider_id].status
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", s3.uri())
    res = subprocess.run([sys.executable, "-m", "trainpod", "runs", "cancel", run_id],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"run {run_id} had already finished (succeeded)" in res.stdout
    assert fake_runpod.pods[handle.provider_id].status == pod_status  # no terminate call was made
    assert record.read_bytes() == before
