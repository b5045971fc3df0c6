"""Runs longer than one STS session: the pod stops (checkpoint, exit 3) shortly before its S3 session expires, and
the following CLI relaunches it on a new pod with a freshly minted session, which resumes from that checkpoint.

The supervisor half runs real child processes; the CLI half rents IdleRunner pods from the loopback fake RunPod API
and mints sessions from the IAM-enforcing moto (tests/fixtures/sts.py), whose AssumeRole gives every session its
own key and token.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from trainpod import credentials, storage
from trainpod.backends.runpod import RunPodBackend
from trainpod.config.loader import load_catalog
from trainpod.pod import supervisor as podside
from trainpod.settings import load_settings
from trainpod.spec import RunSpec, StorageURIs

pytestmark = [pytest.mark.runpod, pytest.mark.s3]

TRAP = ("import pathlib, signal, sys, time\n"
        "out = pathlib.Path({out!r})\n"
        "def stop(*_):\n"
        "    (out / 'checkpointed').write_text('1')\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "time.sleep(60)\n")


def test_the_pod_stops_with_a_checkpoint_before_its_session_expires(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    cfg = load_catalog(use_cwd=False).resolve("smoke", {"max_runtime_minutes": 5})
    spec = RunSpec(run_id="renew-test-run", created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   storage=StorageURIs(dataset=cfg.dataset.path, output=str(out)), stop_grace_seconds=2)
    # the session ends 1.5 s after the point where the stop grace and the safety margin still fit before it
    monkeypatch.setenv(credentials.EXPIRES_ENV, f"{time.time() + 2 + credentials.EXPIRY_MARGIN_SECONDS + 1.5:.3f}")
    sup = podside.Supervisor(spec, [sys.executable, "-c", TRAP.format(out=str(out))], api=None, pod_id=None,
                             storage=podside.TrainpodStorage())
    started = time.monotonic()
    assert sup.run() == 3
    assert 1.0 < time.monotonic() - started < 10  # at the credentials deadline, long before max_runtime (5 min)
    assert (out / "checkpointed").exists()
    reason = json.loads((out / "POD_EXIT").read_text())["reason"]
    assert credentials.EXPIRY_REASON in reason and reason.startswith("watchdog: ")


def test_a_run_stopped_before_expiry_is_relaunched_with_a_fresh_session(sts_s3, fake_runpod):
    backend = RunPodBackend()
    backend.poll_s, backend.start_timeout_s = 0.05, 5.0
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud", {})
    run_id = "renew-run-20260101-000000-abc123"
    spec = RunSpec(run_id=run_id, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="registry.local/trainpod:cuda-0123456789ab",
                   storage=StorageURIs(dataset=sts_s3.uri("datasets/x"), output=sts_s3.uri(f"runs/{run_id}")))
    settings = load_settings(storage_uri=sts_s3.uri())
    handle = backend.submit(backend.plan(spec, settings), settings)  # on demand, not spot
    first = fake_runpod.pods[handle.provider_id]
    assert first.env["AWS_ACCESS_KEY_ID"].startswith("ASIA") and first.env["AWS_SESSION_TOKEN"]
    # what podside records when it stopped the trainer at the credentials deadline
    storage.write_bytes(handle.output + "/POD_EXIT", json.dumps({
        "pod_id": first.id, "exit_code": 3,
        "reason": f"watchdog: {credentials.EXPIRY_REASON} at 2026-01-01T12:00:00Z reached"}).encode())
    status = backend.status(handle)
    assert status.state == "preempted", status  # resumable: the follow loop relaunches it
    handle = backend.relaunch(handle, settings)
    second = fake_runpod.pods[handle.provider_id]
    assert second.id != first.id and fake_runpod.pods[first.id].status == "TERMINATED"
    assert second.env["AWS_SESSION_TOKEN"] != first.env["AWS_SESSION_TOKEN"]  # a new session, minted now
    assert second.env["AWS_ACCESS_KEY_ID"] != first.env["AWS_ACCESS_KEY_ID"]
    assert float(second.env[credentials.EXPIRES_ENV]) >= float(first.env[credentials.EXPIRES_ENV])
    assert len(sts_s3.proxy.policies) == 2 and sts_s3.proxy.policies[0] == sts_s3.proxy.policies[1]
    # an ordinary failure (not the credentials deadline) is not relaunched
    storage.write_bytes(handle.output + "/POD_EXIT", json.dumps(
        {"pod_id": second.id, "exit_code": 3, "reason": "watchdog: max_runtime_minutes=240 reached"}).encode())
    assert backend.status(handle).state == "failed"


def test_the_follow_loop_renews_an_expiring_session_with_a_new_pod(sts_s3, fake_runpod):
    """``launch`` (without --detach) follows the run: the pod's stop before expiry makes it rent a new pod with a
    new session, and it goes on following that pod to the end."""
    import threading

    from trainpod.launcher import Follow

    backend = RunPodBackend()
    backend.poll_s, backend.start_timeout_s, backend.release_timeout_s = 0.05, 5.0, 0.3
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud", {})
    run_id = "renew-follow-20260101-000000-abc123"
    spec = RunSpec(run_id=run_id, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="registry.local/trainpod:cuda-0123456789ab",
                   storage=StorageURIs(dataset=sts_s3.uri("datasets/x"), output=sts_s3.uri(f"runs/{run_id}")))
    settings = load_settings(storage_uri=sts_s3.uri())
    handle = backend.submit(backend.plan(spec, settings), settings)
    first = fake_runpod.pods[handle.provider_id]
    storage.write_bytes(handle.output + "/POD_EXIT", json.dumps({
        "pod_id": first.id, "exit_code": 3,
        "reason": f"watchdog: {credentials.EXPIRY_REASON} at 2026-01-01T12:00:00Z reached"}).encode())

    def relaunched_pod_finishes() -> None:  # stands in for the trainer in the new pod
        end = time.monotonic() + 30
        while len(fake_runpod.pods) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        storage.write_bytes(handle.output + "/DONE", b"{}", settings)

    helper = threading.Thread(target=relaunched_pod_finishes)
    helper.start()
    follower = Follow(backend, handle, settings)
    try:
        lines = list(follower)
    finally:
        helper.join()
    assert any("relaunching" in line for line in lines), lines
    (second,) = [p for p in fake_runpod.pods.values() if p.id != first.id]
    assert follower.handle.provider_id == second.id and follower.relaunches == 1
    assert second.env["AWS_SESSION_TOKEN"] != first.env["AWS_SESSION_TOKEN"]
    assert backend.status(follower.handle).state == "succeeded"
