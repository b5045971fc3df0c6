"""The pod-side supervisor against the loopback fake RunPod API, with real child processes.

The end-to-end cases let the fake "run" each pod as a local process (ProcessRunner): the pod's
command is ``python -m trainpod.pod.supervisor -- CMD``, it gets RunPod's injected RUNPOD_POD_ID and a
pod-scoped RUNPOD_API_KEY, and the fake restarts the container when it exits, as RunPod does.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.runpod_api import ProcessRunner
from trainpod.backends.runpod_api import GraphQLClient, PodRequest, urllib_transport
from trainpod.backends.runpod_v2 import UrllibTransport, V2Client
from trainpod.config.loader import load_catalog
from trainpod.pod import supervisor as podside
from trainpod.spec import RunSpec, StorageURIs

pytestmark = pytest.mark.runpod

GPU = "NVIDIA GeForce RTX 4090"


def _spec(out: Path, grace: float = 5.0, **overrides) -> RunSpec:
    cfg = load_catalog(use_cwd=False).resolve("smoke", overrides)
    return RunSpec(run_id="podside-test-run", created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="img:test", storage=StorageURIs(dataset=cfg.dataset.path, output=str(out)),
                   stop_grace_seconds=grace)


def _child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _wait_for(predicate, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _deploy_process_pod(fake, client, spec: RunSpec, child: list[str]) -> str:
    fake.runner = ProcessRunner()
    cmd = [sys.executable, "-m", "trainpod.pod.supervisor", "--", *child]
    pod = client.deploy(PodRequest(name="trainpod-podside-a0", image="img:test", gpu_type_id=GPU,
                                   cloud_type="COMMUNITY", docker_args=shlex.join(cmd),
                                   env={"TRAINPOD_RUN_SPEC": spec.to_json()}))
    return pod.id


def _terminated(fake, pod_id: str):
    return lambda: (fake.refresh(), fake.pods[pod_id].status == "TERMINATED")[1]


@pytest.fixture
def client(fake_runpod):
    return V2Client(fake_runpod.api_key, retries=2, backoff_s=0.01)


def test_pod_trains_then_terminates_itself(fake_runpod, client, tmp_path):
    out = tmp_path / "out"
    spec = _spec(out, max_runtime_minutes=5)
    child = _child(f"import pathlib; p = pathlib.Path({str(out)!r}); p.mkdir(parents=True, exist_ok=True); "
                   "(p / 'DONE').write_text('{}')")
    pod_id = _deploy_process_pod(fake_runpod, client, spec, child)
    _wait_for(_terminated(fake_runpod, pod_id))
    marker = json.loads((out / "POD_EXIT").read_text())
    assert marker["pod_id"] == pod_id and marker["exit_code"] == 0 and marker["reason"] == "finished"
    assert fake_runpod.pods[pod_id].restarts == 0


def test_done_marker_means_no_training_again(fake_runpod, client, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "DONE").write_text("{}")
    spec = _spec(out, max_runtime_minutes=5)
    pod_id = _deploy_process_pod(fake_runpod, client, spec, _child(f"open({str(out / 'trained')!r}, 'w')"))
    _wait_for(_terminated(fake_runpod, pod_id))
    assert not (out / "trained").exists()


def test_restarted_container_of_a_failed_run_does_not_train_again(fake_runpod, client, tmp_path):
    out = tmp_path / "out"
    spec = _spec(out, max_runtime_minutes=5)
    # the first self-terminate is refused (v2, GraphQL, and both stops), so the process exits and the fake
    # restarts the container
    fake_runpod.inject("problem", op="deletePod", status=403, message="Forbidden")
    fake_runpod.inject("error", op="podTerminate", message="Forbidden")
    fake_runpod.inject("problem", op="podAction", status=403, message="Forbidden")
    fake_runpod.inject("error", op="podStop", message="Forbidden")
    runs = tmp_path / "runs.txt"
    pod_id = _deploy_process_pod(fake_runpod, client, spec,
                                 _child(f"open({str(runs)!r}, 'a').write('ran\\n'); raise SystemExit(1)"))
    _wait_for(_terminated(fake_runpod, pod_id))
    assert runs.read_text() == "ran\n"  # trained once, not once per restart
    assert fake_runpod.pods[pod_id].restarts == 1
    assert json.loads((out / "POD_EXIT").read_text())["exit_code"] == 1


def _idle_pod(fake, client, name: str = "trainpod-watchdog-a0") -> tuple[str, V2Client]:
    """A pod and the v2 client its supervisor holds (pod-scoped key, stdlib transport, as in the image)."""
    pod = client.deploy(PodRequest(name=name, image="img:test", gpu_type_id=GPU, cloud_type="COMMUNITY"))
    client.pod(pod.id)  # placed and started
    scoped = V2Client(fake.pods[pod.id].api_key, retries=2, backoff_s=0.01, transport=UrllibTransport())
    return pod.id, scoped


def _legacy(fake, pod_id: str) -> GraphQLClient:
    return GraphQLClient(fake.pods[pod_id].api_key, retries=2, backoff_s=0.01, transport=urllib_transport)


def test_self_terminate_falls_back_to_graphql_when_v2_refuses_the_pod_key(fake_runpod, client, tmp_path):
    out = tmp_path / "out"
    fake_runpod.pod_key_v2 = False  # that v2 accepts the pod-scoped key is unverified on RunPod
    pod_id, scoped = _idle_pod(fake_runpod, client)
    sup = podside.Supervisor(_spec(out, max_runtime_minutes=5), _child("pass"), api=scoped, pod_id=pod_id,
                             storage=podside.TrainpodStorage(), fallback_api=_legacy(fake_runpod, pod_id))
    assert sup.run() == 0
    assert fake_runpod.pods[pod_id].status == "TERMINATED" and fake_runpod.pods[pod_id].terminated_by == "pod"
    refused = [r for r in fake_runpod.v2_requests if r["op"] == "deletePod" and r["scope"] == pod_id]
    assert refused and not (out / podside.STUCK_MARKER).exists()


def test_when_no_api_lets_the_pod_terminate_it_stops_and_sweep_ends_it(fake_runpod, client, tmp_path):
    from trainpod.backends.runpod import sweep
    from trainpod.settings import load_settings

    fake_runpod.pod_key_v2 = False
    fake_runpod.pod_key_graphql_terminate = False
    run_id = "podside-test-run"
    out = tmp_path / "runs" / run_id
    pod_id, scoped = _idle_pod(fake_runpod, client, name=f"trainpod-{run_id}-a0")
    sup = podside.Supervisor(_spec(out, max_runtime_minutes=5), _child("raise SystemExit(1)"), api=scoped,
                             pod_id=pod_id, storage=podside.TrainpodStorage(),
                             fallback_api=_legacy(fake_runpod, pod_id))
    assert sup.run() == 1
    pod = fake_runpod.pods[pod_id]
    assert pod.status == "EXITED" and pod.stopped_by == "pod"  # no GPU billing while it waits for the sweep
    marker = json.loads((out / podside.STUCK_MARKER).read_text())
    assert marker["pod_id"] == pod_id and marker["stopped"] and "Forbidden" in marker["errors"]
    (item,) = sweep(load_settings(storage_uri=str(tmp_path)), terminate=True)  # a run unknown to this machine
    assert item.terminated and "could not terminate itself" in item.reason
    assert pod.status == "TERMINATED" and pod.terminated_by == "account"


TRAP = ("import pathlib, signal, sys, time\n"
        "out = pathlib.Path({out!r})\n"
        "def stop(*_):\n"
        "    (out / 'checkpointed').write_text('1')\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "(out / 'started').write_text('1')\n"
        "time.sleep(60)\n")


def test_watchdog_max_runtime_stops_checkpoints_and_terminates(fake_runpod, client, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pod_id, scoped = _idle_pod(fake_runpod, client)
    spec = _spec(out, max_runtime_minutes=0.02)  # 1.2 s
    sup = podside.Supervisor(spec, _child(TRAP.format(out=str(out))), api=scoped, pod_id=pod_id,
                             storage=podside.TrainpodStorage())
    started = time.monotonic()
    assert sup.run() == 3
    elapsed = time.monotonic() - started
    assert elapsed > 1.0 and elapsed < 10  # waited for the grace period, then went on
    assert (out / "checkpointed").exists()
    assert "max_runtime_minutes=0.02" in json.loads((out / "POD_EXIT").read_text())["reason"]
    assert fake_runpod.pods[pod_id].status == "TERMINATED"


def test_watchdog_max_cost_uses_the_pods_api_price(fake_runpod, client, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pod_id, scoped = _idle_pod(fake_runpod, client)
    price = fake_runpod.pods[pod_id].cost_per_hr  # 0.34 $/h: community RTX 4090 in the fake
    spec = _spec(out, max_cost_usd=price / 3600 * 1.0)  # one second's worth
    sup = podside.Supervisor(spec, _child(TRAP.format(out=str(out))), api=scoped, pod_id=pod_id,
                             storage=podside.TrainpodStorage())
    assert sup.run() == 3
    assert f"at ${price:g}/h" in json.loads((out / "POD_EXIT").read_text())["reason"]
    assert fake_runpod.pods[pod_id].status == "TERMINATED"


def test_watchdog_kills_a_child_that_ignores_sigterm(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    spec = _spec(out, grace=0.5, max_runtime_minutes=0.01)
    child = _child("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
    sup = podside.Supervisor(spec, child, api=None, pod_id=None, storage=podside.TrainpodStorage())
    assert sup.run() == 128 + signal.SIGKILL


def test_sigterm_is_forwarded_to_the_child(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    spec = _spec(out, max_runtime_minutes=5)
    env = {**os.environ, "TRAINPOD_RUN_SPEC": spec.to_json()}
    env.pop("RUNPOD_POD_ID", None)
    proc = subprocess.Popen([sys.executable, "-m", "trainpod.pod.supervisor", "--", *_child(TRAP.format(out=str(out)))],
                            env=env)
    try:
        _wait_for(lambda: (out / "started").exists(), timeout=20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 3
    finally:
        proc.kill()
    assert (out / "checkpointed").exists()
    assert json.loads((out / "POD_EXIT").read_text())["reason"] == "received SIGTERM"


def test_a_supervisor_that_cannot_start_still_ends_the_pod(fake_runpod, client, monkeypatch):
    pod_id, _ = _idle_pod(fake_runpod, client)
    monkeypatch.setenv("RUNPOD_POD_ID", pod_id)
    monkeypatch.setenv("RUNPOD_API_KEY", fake_runpod.pods[pod_id].api_key)
    monkeypatch.setenv("TRAINPOD_RUN_SPEC", "{not json")
    assert podside.main(["--", "true"]) == 2
    assert fake_runpod.pods[pod_id].status == "TERMINATED"


def test_usage_errors():
    assert podside.main(["true"]) == 2
    assert podside.main(["--bogus", "--", "true"]) == 2
