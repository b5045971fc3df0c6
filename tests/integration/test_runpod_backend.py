"""RunPodBackend submit / status / logs / cancel and ``sweep`` against the loopback fake API and a
loopback S3 (moto). Pods are IdleRunner pods: the run's outputs are written to S3 by the test,
standing in for the trainer, so no Docker is needed.
"""

from __future__ import annotations

import json

import pytest

from trainpod import storage
from trainpod.backends.runpod import RunPodBackend, sweep
from trainpod.backends.runpod_api import CapacityError, GraphQLClient, PodRequest
from trainpod.config.loader import load_catalog
from trainpod.errors import TrainpodError, UnsupportedError
from trainpod.runs import RunRegistry
from trainpod.settings import load_settings
from trainpod.spec import RunSpec, StorageURIs

pytestmark = [pytest.mark.runpod, pytest.mark.s3]


@pytest.fixture
def backend() -> RunPodBackend:
    b = RunPodBackend()
    b.poll_s, b.start_timeout_s = 0.05, 5.0
    return b


def _plan(backend, s3, run_id="rp-run-20260101-000000-abc123", preset="oracle-rauru-cloud", **overrides):
    cfg = load_catalog(use_cwd=False).resolve(preset, overrides)
    spec = RunSpec(run_id=run_id, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="registry.local/trainpod:cuda-0123456789ab",
                   storage=StorageURIs(dataset=cfg.dataset.path, output=s3.uri(f"runs/{run_id}")))
    settings = load_settings(storage_uri=s3.uri())
    return backend.plan(spec, settings), settings


def test_submit_rents_the_pod_with_secrets_filled_in_and_records_the_run(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    assert "AWS_SECRET_ACCESS_KEY" in plan.secret_env and plan.display()["env"]["AWS_SECRET_ACCESS_KEY"] == "***"
    handle = backend.submit(plan, settings)
    pod = fake_runpod.pods[handle.provider_id]
    # S3: an STS session minted at submit (moto's STS), never the user's own secret key
    assert pod.env["AWS_SECRET_ACCESS_KEY"] and pod.env["AWS_SESSION_TOKEN"]
    assert settings.aws_secret_access_key.get_secret_value() not in json.dumps(pod.env)
    assert float(pod.env["TRAINPOD_CREDENTIALS_EXPIRE_AT"]) > 0
    assert RunSpec.from_json(pod.env["TRAINPOD_RUN_SPEC"]) == plan.spec
    assert pod.gpu_type_id == "NVIDIA GeForce RTX 4090" and pod.cloud_type == "COMMUNITY"
    assert pod.request["gpu"]["minCudaVersion"] == "13.0" and pod.name.endswith("-a0") and pod.api == "v2"
    saved = RunRegistry(settings.state_path).get(plan.run_id)
    assert saved.provider_id == pod.id and saved.extra["price_source"] == "RunPod REST v2 /v2/catalog/gpus"
    assert saved.extra["started"] and saved.extra["cost_per_hr"] == 0.34
    assert backend.status(saved).state == "running"


def test_capacity_error_falls_back_to_the_next_gpu_type(backend, s3, fake_runpod):
    fake_runpod.inject("capacity", op="createPod")
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    assert handle.extra["gpu_type_id"] == "NVIDIA RTX A6000" and handle.extra["pod_name"].endswith("-a1")
    assert [p.gpu_type_id for p in fake_runpod.live_pods()] == ["NVIDIA RTX A6000"]


def test_pods_that_never_start_are_terminated_and_reported(backend, s3, fake_runpod):
    fake_runpod.never_start = True
    backend.start_timeout_s = 0.3
    plan, settings = _plan(backend, s3)
    with pytest.raises(CapacityError, match="did not start") as info:
        backend.submit(plan, settings)
    assert "NVIDIA RTX A6000" in str(info.value)
    assert fake_runpod.live_pods() == []  # nothing left billing


def test_live_price_over_max_cost_refuses_before_renting(backend, s3, fake_runpod):
    for gpu in fake_runpod.gpu_types:
        gpu["communityPrice"] = 9.0
    plan, settings = _plan(backend, s3)
    with pytest.raises(UnsupportedError, match="exceeds max_cost_usd"):
        backend.submit(plan, settings)
    assert fake_runpod.pods == {}


def test_spot_bids_the_live_spot_price_and_reads_preemption(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3, spot=True)
    handle = backend.submit(plan, settings)
    pod = fake_runpod.pods[handle.provider_id]
    assert pod.spot and pod.request["bidPerGpu"] == 0.2
    # legacy GraphQL create: a provider-side deadline = max runtime (240 min) + stop grace (60 s) + 10 min start-up
    import calendar
    import time

    deadline = calendar.timegm(time.strptime(pod.terminate_after, "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(deadline - (time.time() + (240 + 1 + 10) * 60)) < 30 and handle.extra["terminate_after"]
    assert any("podRentInterruptable" in r["query"] and "terminateAfter" in r["query"] for r in fake_runpod.requests)
    fake_runpod.preempt(pod.id)
    assert backend.status(handle).state == "preempted"


def test_status_and_logs_read_the_run_output_in_s3(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    out = handle.output
    storage.write_bytes(out + "/status.json", json.dumps({"step": 12, "loss": 1.25}).encode())
    storage.write_bytes(out + "/logs/train.log", b"step 1 loss 2.0\nstep 2 loss 1.9\npartial")
    status = backend.status(handle)
    assert (status.state, status.step, status.loss) == ("running", 12, 1.25)
    assert list(backend.logs(handle)) == ["step 1 loss 2.0", "step 2 loss 1.9"]
    storage.write_bytes(out + "/logs/train.log", b"step 1 loss 2.0\nstep 2 loss 1.9\npartial line\ndone\n")
    storage.write_bytes(out + "/DONE", b"{}")
    assert backend.status(handle).state == "succeeded"


def test_logs_follow_streams_the_pods_own_output_and_falls_back_to_s3(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    pod = fake_runpod.pods[handle.provider_id]
    pod.log("container", "step 1 loss 2.0")
    pod.log("container", "step 2 loss 1.9")
    storage.write_bytes(handle.output + "/DONE", b"{}")
    lines = list(backend.logs(handle, follow=True))  # SSE from the fake; the run is over when the stream ends
    assert lines[-2:] == ["step 1 loss 2.0", "step 2 loss 1.9"]
    assert any(line.startswith("[runpod] pulling image registry.local/trainpod") for line in lines), lines
    assert any(r["op"] == "getPodLogs" for r in fake_runpod.v2_requests)
    # the pod is gone: its log with it; the S3 log is the fallback
    fake_runpod.pods[handle.provider_id].status = "TERMINATED"
    storage.write_bytes(handle.output + "/logs/train.log", b"from s3\n")
    lines = list(backend.logs(handle, follow=True))
    assert "live log is unavailable" in lines[0] and lines[1:] == ["from s3"]


def test_logs_follow_catches_up_from_s3_when_the_pod_ended_before_streaming_its_last_lines(
        backend, s3, fake_runpod):
    """A job prints its last lines, ships its log, and the pod terminates itself at once: the log stream ends
    without them. The follower prints what the S3 log has after the last line it showed, each line once."""
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    pod = fake_runpod.pods[handle.provider_id]
    pod.log("container", "step 1 loss 2.0")
    pod.log("container", "step 2 loss 1.9")  # streamed; the two lines below never reach the stream
    storage.write_bytes(handle.output + "/logs/train.log",
                        b"step 1 loss 2.0\nstep 2 loss 1.9\nstep 3 loss 1.8\ndone: w=0.5\n")
    storage.write_bytes(handle.output + "/DONE", b"{}")
    lines = [line for line in backend.logs(handle, follow=True) if not line.startswith("[runpod]")]
    assert lines == ["step 1 loss 2.0", "step 2 loss 1.9", "step 3 loss 1.8", "done: w=0.5"]


def test_an_error_pod_is_terminated_and_reported_with_its_system_log(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    fake_runpod.pull_errors.add(plan.image)
    with pytest.raises(TrainpodError, match="ERROR") as info:
        backend.submit(plan, settings)
    assert "unauthorized: authentication required" in info.value.message and "NVIDIA RTX A6000" not in str(info.value)
    assert fake_runpod.live_pods() == [] and len(fake_runpod.pods) == 1  # not retried on the fallback GPU


def test_a_pod_stuck_provisioning_is_terminated_and_the_next_gpu_type_tried(backend, s3, fake_runpod):
    fake_runpod.stuck_name_suffixes.add("-a0")  # the first pod never gets a machine
    backend.provision_timeout_s = 0.3
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    first = [p for p in fake_runpod.pods.values() if p.name.endswith("-a0")][0]
    assert first.status == "TERMINATED" and handle.extra["pod_name"].endswith("-a1")


def test_out_of_stock_gpu_types_are_skipped_before_any_create(backend, s3, fake_runpod):
    fake_runpod.set_stock("NVIDIA GeForce RTX 4090", 0, cloud="COMMUNITY")
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    assert handle.extra["gpu_type_id"] == "NVIDIA RTX A6000"
    assert [r["body"]["gpu"]["id"] for r in fake_runpod.v2_requests if r["op"] == "createPod"] == ["NVIDIA RTX A6000"]


def test_nothing_in_stock_for_the_cuda_floor_is_refused_before_renting(backend, s3, fake_runpod):
    for gpu in ("NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"):
        fake_runpod.set_stock(gpu, 0, cloud="COMMUNITY", cuda="12.8")
        fake_runpod.set_stock(gpu, 0, cloud="COMMUNITY", cuda="13.0")  # only CUDA 12.4 hosts free: below the floor
    plan, settings = _plan(backend, s3)
    with pytest.raises(CapacityError, match="no GPU type is in stock") as info:
        backend.submit(plan, settings)
    assert "NVIDIA GeForce RTX 4090 (COMMUNITY)" in info.value.message and "NVIDIA RTX A6000 (COMMUNITY)" in info.value.message
    assert "CUDA >= 13.0" in info.value.message and fake_runpod.pods == {}


def test_insufficient_balance_stops_without_trying_fallbacks(backend, s3, fake_runpod):
    from trainpod.backends.runpod_api import InsufficientBalanceError

    fake_runpod.balance = 0
    plan, settings = _plan(backend, s3)
    with pytest.raises(InsufficientBalanceError):
        backend.submit(plan, settings)
    assert sum(1 for r in fake_runpod.v2_requests if r["op"] == "createPod") == 1


def test_status_shows_what_runpod_billed_next_to_the_estimate(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    fake_runpod.pods[handle.provider_id].billed_s = 3600
    status = backend.status(handle)
    assert status.billed_usd == pytest.approx(0.34, rel=0.01) and status.estimated_cost_usd == 1.36


def test_failed_run_reads_failed_with_the_supervisors_reason(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    storage.write_bytes(handle.output + "/POD_EXIT", json.dumps(
        {"pod_id": handle.provider_id, "exit_code": 3, "reason": "watchdog: max_runtime_minutes=240 reached"}).encode())
    status = backend.status(handle)
    assert (status.state, status.exit_code) == ("failed", 3) and "watchdog" in status.detail


def test_cancel_terminates_and_is_idempotent(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    backend.cancel(handle)
    backend.cancel(handle)
    assert fake_runpod.pods[handle.provider_id].status == "TERMINATED"
    saved = RunRegistry(settings.state_path).get(handle.run_id)
    assert backend.status(saved).state == "cancelled"


def test_sweep_finds_done_unknown_and_over_limit_pods(backend, s3, fake_runpod):
    done_plan, settings = _plan(backend, s3, run_id="rp-done-20260101-000000-aaaaaa")
    done = backend.submit(done_plan, settings)
    storage.write_bytes(done.output + "/DONE", b"{}")
    live = backend.submit(_plan(backend, s3, run_id="rp-live-20260101-000000-bbbbbb")[0], settings)
    client = GraphQLClient(fake_runpod.api_key, retries=1)
    ghost = client.deploy(PodRequest(name="trainpod-rp-ghost-20260101-000000-cccccc-a0", image="x",
                                     gpu_type_id="NVIDIA GeForce RTX 4090"))
    notebook = client.deploy(PodRequest(name="my-notebook", image="x", gpu_type_id="NVIDIA GeForce RTX 4090"))
    over = backend.submit(_plan(backend, s3, run_id="rp-over-20260101-000000-dddddd")[0], settings)
    fake_runpod.pods[over.provider_id].started_at -= 5 * 3600  # up 5 h, max_runtime_minutes is 240

    report = {i.pod_id: i for i in sweep(settings)}
    assert report[done.provider_id].verdict == "done"
    assert report[ghost.id].verdict == "unknown" and report[ghost.id].run_id == "rp-ghost-20260101-000000-cccccc"
    assert report[over.provider_id].verdict == "over-limit"
    assert report[live.provider_id].verdict == "keep"
    assert notebook.id not in report
    assert not any(i.terminated for i in report.values())  # listing only, without --yes

    # a pod this machine does not know may be a teammate's live run: kept unless asked for
    swept = {i.pod_id for i in sweep(settings, terminate=True) if i.terminated}
    assert swept == {done.provider_id, over.provider_id}
    assert {p.id for p in fake_runpod.live_pods()} == {live.provider_id, notebook.id, ghost.id}
    swept = {i.pod_id for i in sweep(settings, terminate=True, include_unknown=True) if i.terminated}
    assert swept == {ghost.id}
    assert {p.id for p in fake_runpod.live_pods()} == {live.provider_id, notebook.id}


def test_preempted_spot_run_is_relaunched_a_bounded_number_of_times(backend, s3, fake_runpod):
    plan, settings = _plan(backend, s3, spot=True)
    handle = backend.submit(plan, settings)
    first = handle.provider_id
    fake_runpod.preempt(first)
    assert backend.status(handle).state == "preempted"
    backend.max_relaunches = 2
    handle = backend.relaunch(handle, settings)
    assert handle.provider_id != first and handle.extra["pod_name"].endswith("-a1")
    assert fake_runpod.pods[first].status == "TERMINATED"
    assert RunRegistry(settings.state_path).get(plan.run_id).provider_id == handle.provider_id
    # a spot pod stopped with SIGTERM leaves POD_EXIT from the supervisor: still a preemption
    storage.write_bytes(handle.output + "/POD_EXIT", json.dumps(
        {"pod_id": handle.provider_id, "exit_code": 3, "reason": "received SIGTERM"}).encode())
    assert backend.status(handle).state == "preempted"
    handle = backend.relaunch(handle, settings)
    assert handle.extra["relaunches"] == 2 and handle.extra["pod_name"].endswith("-a2")
    assert backend.status(handle).state == "running"  # the old POD_EXIT belongs to another pod
    assert [p.id for p in fake_runpod.live_pods()] == [handle.provider_id]
    fake_runpod.preempt(handle.provider_id)
    with pytest.raises(TrainpodError, match="relaunched 2 times"):
        backend.relaunch(handle, settings)
    assert fake_runpod.live_pods() == []  # no new pod, and the preempted one does not keep its disk billing


def test_following_cli_terminates_a_pod_whose_watchdog_did_not_act(backend, s3, fake_runpod):
    """An IdleRunner pod has no supervisor inside, so only the following CLI's backstop can end it:
    once max_runtime + the stop grace period (+ two polls) has passed, logs(follow=True) terminates it."""
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud", {"max_runtime_minutes": 0.01})
    spec = RunSpec(run_id="rp-overdue-20260101-000000-abc123", created="2026-01-01T00:00:00+00:00", remote="runpod",
                   config=cfg, image="registry.local/trainpod:cuda-0123456789ab", stop_grace_seconds=0.5,
                   storage=StorageURIs(dataset=cfg.dataset.path, output=s3.uri("runs/overdue")))
    settings = load_settings(storage_uri=s3.uri())
    handle = backend.submit(backend.plan(spec, settings), settings)
    lines = list(backend.logs(handle, follow=True))  # returns once the pod is gone
    assert any("max_runtime_minutes=0.01 passed" in line and handle.provider_id in line for line in lines), lines
    assert fake_runpod.pods[handle.provider_id].status == "TERMINATED"
    assert backend.status(RunRegistry(settings.state_path).get(spec.run_id)).state == "cancelled"


def test_a_log_stream_that_never_ends_does_not_starve_the_backstop(backend, s3, fake_runpod):
    """RunPod may keep a pod's SSE stream open for as long as the pod talks: the follower still checks the
    run's limits every ``recheck_s`` (resuming the stream with Last-Event-ID), so an overdue pod is ended."""
    import threading
    import time

    fake_runpod.sse_max_s = 600.0  # the stream would stay open for ten minutes
    backend.recheck_s = 0.5
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud", {"max_runtime_minutes": 0.01})
    spec = RunSpec(run_id="rp-chatty-20260101-000000-abc123", created="2026-01-01T00:00:00+00:00", remote="runpod",
                   config=cfg, image="registry.local/trainpod:cuda-0123456789ab", stop_grace_seconds=0.5,
                   storage=StorageURIs(dataset=cfg.dataset.path, output=s3.uri("runs/chatty")))
    settings = load_settings(storage_uri=s3.uri())
    handle = backend.submit(backend.plan(spec, settings), settings)
    pod = fake_runpod.pods[handle.provider_id]
    stop = threading.Event()

    def chatter() -> None:
        i = 0
        while not stop.is_set():
            pod.log("container", f"line {i}")
            i += 1
            time.sleep(0.05)

    threading.Thread(target=chatter, daemon=True).start()
    t0 = time.monotonic()
    try:
        lines = list(backend.logs(handle, follow=True))
    finally:
        stop.set()
    assert time.monotonic() - t0 < 60
    assert any("max_runtime_minutes=0.01 passed" in line for line in lines)
    assert pod.status == "TERMINATED"
    numbers = [int(line.split()[1]) for line in lines if line.startswith("line ")]
    assert numbers == sorted(set(numbers)) and len(numbers) > 10  # resumed: nothing lost or shown twice


def _follow(backend, handle, settings) -> list[str]:
    from trainpod.launcher import Follow

    return list(Follow(backend, handle, settings))


def test_following_waits_for_the_pod_to_terminate_itself_after_done(backend, s3, fake_runpod):
    """DONE appears in S3 a moment before the pod's supervisor terminates it: the CLI does not call the
    run over (and exit) while the pod still bills; it waits, and leaves the termination to the pod."""
    import threading

    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    pod = fake_runpod.pods[handle.provider_id]
    storage.write_bytes(handle.output + "/DONE", b"{}")
    pod_key = GraphQLClient(pod.api_key, retries=1)  # what podside holds inside the pod
    timer = threading.Timer(0.5, pod_key.terminate, args=(pod.id,))
    timer.start()
    try:
        lines = _follow(backend, handle, settings)
    finally:
        timer.join()
    assert pod.status == "TERMINATED" and pod.terminated_by == "pod", (pod.status, pod.terminated_by)
    assert not any("terminating it" in line for line in lines), lines


def test_following_terminates_a_pod_left_running_after_its_run_ended(backend, s3, fake_runpod):
    """The pod's self-terminate did not happen (no supervisor in an IdleRunner pod): past the release
    timeout the CLI terminates it with the account key and says so."""
    backend.release_timeout_s = 0.3
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    storage.write_bytes(handle.output + "/DONE", b"{}")
    lines = _follow(backend, handle, settings)
    pod = fake_runpod.pods[handle.provider_id]
    assert pod.status == "TERMINATED" and pod.terminated_by == "account"
    assert any(f"pod {pod.id} is still RUNNING; terminating it" in line for line in lines), lines
    assert backend.status(handle).state == "succeeded"  # DONE still decides the outcome


def test_following_terminates_an_exited_pod_of_a_failed_run_at_once(backend, s3, fake_runpod):
    """An on-demand pod left EXITED keeps its disk (and its bill): a failed run's pod is terminated
    without waiting out the release timeout."""
    import time

    backend.release_timeout_s = 60.0
    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    fake_runpod.preempt(handle.provider_id)  # the container is gone, the pod EXITED
    t0 = time.monotonic()
    lines = _follow(backend, handle, settings)
    assert time.monotonic() - t0 < 30
    assert backend.status(handle).state == "failed"
    assert any("is still EXITED; terminating it" in line for line in lines), lines
    assert fake_runpod.pods[handle.provider_id].status == "TERMINATED"


def _job_prep(s3, tmp_path, monkeypatch, **request):
    from pathlib import Path

    from trainpod import launcher

    example = Path(__file__).resolve().parents[2] / "examples" / "byo-train"
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", s3.uri("team"))
    monkeypatch.setenv("TRAINPOD_REGISTRY", "registry.local/team")
    toml = tmp_path / "training.toml"
    toml.write_text(f'[jobs.gpu]\nhardware = "cloud-rtx-4090"\nproject_dir = "{example}"\n'
                    'command = ["python", "train.py"]\n')
    prep = launcher.prepare(launcher.LaunchRequest(preset="gpu", config=str(toml), remote="runpod",
                                                   max_runtime_minutes=30, **request))
    prep.backend.poll_s, prep.backend.start_timeout_s = 0.05, 5.0
    return prep


def test_a_job_falls_back_to_the_next_gpu_type_on_capacity_errors(s3, fake_runpod, tmp_path, monkeypatch):
    prep = _job_prep(s3, tmp_path, monkeypatch)
    assert [a["gpu_type_id"] for a in prep.plan.provider_request["attempts"]][:2] == [
        "NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"]
    fake_runpod.inject("capacity", op="createPod")
    handle = prep.backend.submit(prep.plan, prep.settings)
    assert handle.extra["gpu_type_id"] == "NVIDIA RTX A6000" and handle.extra["pod_name"].endswith("-a1")
    assert [p.gpu_type_id for p in fake_runpod.live_pods()] == ["NVIDIA RTX A6000"]


def test_a_preempted_spot_job_is_relaunched_with_resume_a_bounded_number_of_times(s3, fake_runpod, tmp_path,
                                                                                 monkeypatch):
    prep = _job_prep(s3, tmp_path, monkeypatch, spot=True)
    handle = prep.backend.submit(prep.plan, prep.settings)
    first = fake_runpod.pods[handle.provider_id]
    assert first.spot and handle.extra["spot"] and not json.loads(first.env["TRAINPOD_RUN_SPEC"])["resume"]
    fake_runpod.preempt(first.id)
    assert prep.backend.status(handle).state == "preempted"
    prep.backend.max_relaunches = 1
    handle = prep.backend.relaunch(handle, prep.settings)
    second = fake_runpod.pods[handle.provider_id]
    assert second.spot and second.name.endswith("-a1") and first.status == "TERMINATED"
    assert json.loads(second.env["TRAINPOD_RUN_SPEC"])["resume"]  # jobrun restores the mirror, then resumes
    assert RunRegistry(prep.settings.state_path).get(handle.run_id).provider_id == second.id
    fake_runpod.preempt(second.id)
    with pytest.raises(TrainpodError, match="relaunched 1 times"):
        prep.backend.relaunch(handle, prep.settings)
    assert fake_runpod.live_pods() == []


def test_sweep_deletes_only_unused_registry_credentials_trainpod_made(backend, s3, fake_runpod):
    from pydantic import SecretStr

    from trainpod.backends.runpod import prune_registry_credentials
    from trainpod.backends.runpod_v2 import V2Client

    client = V2Client(fake_runpod.api_key, retries=1)
    old = client.save_registry_auth("trainpod-ghcr.io-olduser", "olduser", SecretStr("old-pw-123"))
    used = client.save_registry_auth("trainpod-ghcr.io-bot", "bot", SecretStr("bot-pw-123"))
    mine = client.save_registry_auth("my-own-credential", "me", SecretStr("my-pw-123"))
    client.deploy(PodRequest(name="trainpod-x-a0", image="img", gpu_type_id="NVIDIA GeForce RTX 4090",
                             cloud_type="COMMUNITY", container_registry_auth_id=used))
    settings = load_settings(storage_uri=s3.uri())
    assert prune_registry_credentials(settings) == [("trainpod-ghcr.io-olduser", "unused")]  # listing only
    assert old in fake_runpod.registry_auths
    assert prune_registry_credentials(settings, delete=True) == [("trainpod-ghcr.io-olduser", "deleted")]
    assert set(fake_runpod.registry_auths) == {used, mine}


def test_runs_list_and_status_show_the_billed_cost_next_to_the_estimate(backend, s3, fake_runpod):
    import subprocess
    import sys

    plan, settings = _plan(backend, s3)
    handle = backend.submit(plan, settings)
    fake_runpod.pods[handle.provider_id].billed_s = 7200  # two hours at $0.34/h
    listed = subprocess.run([sys.executable, "-m", "trainpod", "runs", "list", "--json"], capture_output=True,
                            text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["billed_usd"] == pytest.approx(0.68, rel=0.01) and row["estimated_cost_usd"] == 1.36
    assert row["cost"] == "$0.68 (est $1.36)"
    shown = subprocess.run([sys.executable, "-m", "trainpod", "runs", "status", handle.run_id], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["billed_usd"] == pytest.approx(0.68, rel=0.01) and status["estimated_cost_usd"] == 1.36
