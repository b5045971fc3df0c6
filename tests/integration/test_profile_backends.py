"""``trainpod --profile X runs status|logs|cancel``: the profile reaches every backend call, for S3 and RunPod.

Backends are constructed with the command's settings, so the endpoints a profile names are used by status (the
RunPod API, the run's markers in S3), logs (the log in S3) and cancel (the RunPod API), not only by the run
registry. The environment here holds only the secrets; the endpoints are in the profile alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from trainpod import storage
from trainpod.backends.runpod import RunPodBackend
from trainpod.config.loader import load_catalog
from trainpod.settings import load_settings
from trainpod.spec import RunSpec, StorageURIs

pytestmark = [pytest.mark.runpod, pytest.mark.s3]

RUN_ID = "pf-run-20260101-000000-abc123"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainpod", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_runs_status_logs_and_cancel_use_the_profile_for_s3_and_runpod(s3, fake_runpod, tmp_path):
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud", {})
    spec = RunSpec(run_id=RUN_ID, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="registry.local/trainpod:cuda-0123456789ab",
                   storage=StorageURIs(dataset=cfg.dataset.path, output=s3.uri(f"runs/{RUN_ID}")))
    settings = load_settings(storage_uri=s3.uri())
    backend = RunPodBackend(settings)
    backend.poll_s, backend.start_timeout_s = 0.05, 5.0
    handle = backend.submit(backend.plan(spec))
    storage.write_bytes(f"{handle.output}/logs/train.log", b"step 1 loss 2.5\nstep 2 loss 2.1\n", settings)

    # from here on the endpoints are only in the profile; the environment keeps the secrets
    profile = tmp_path / "team.env"
    profile.write_text(f"TRAINPOD_RUNPOD_API_BASE_URL={os.environ['RUNPOD_API_BASE_URL']}\n"
                       f"TRAINPOD_S3_ENDPOINT_URL={s3.endpoint}\n"
                       f"TRAINPOD_STATE_DIR={settings.state_dir}\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUNPOD_API_BASE_URL", "AWS_ENDPOINT_URL", "TRAINPOD_STATE_DIR")}

    without = _cli("runs", "status", RUN_ID, env={**env, "TRAINPOD_STATE_DIR": settings.state_dir,
                                                    "AWS_MAX_ATTEMPTS": "1"})
    assert without.returncode != 0  # the endpoints are nowhere else: the profile is what makes the calls work

    status = _cli("--profile", str(profile), "runs", "status", RUN_ID, env=env)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["state"] == "running" and handle.provider_id in shown["detail"]

    logs = _cli("--profile", str(profile), "runs", "logs", RUN_ID, env=env)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.splitlines() == ["step 1 loss 2.5", "step 2 loss 2.1"]

    cancel = _cli("--profile", str(profile), "runs", "cancel", RUN_ID, env=env)
    assert cancel.returncode == 0, cancel.stderr
    assert fake_runpod.pods[handle.provider_id].status == "TERMINATED"
