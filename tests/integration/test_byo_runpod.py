"""A custom job on RunPod through the whole loopback chain, nothing of trainpod's mocked: CLI -> project image
(hardware image + the example project's layer) built and pushed to the loopback registry -> runpod SDK -> HTTP
-> fake API -> the pod as a real container (host networking) -> podside (DONE check, watchdog, self-terminate)
-> jobrun -> the example's train.py -> outputs mirrored to S3 (moto) -> downloaded by the CLI.

The CPU image stands in for the CUDA one exactly as in test_runpod_chain.py (``TRAINPOD_RUNPOD_CPU_STAND_IN=1``
and a cpu hardware table naming a runpod_gpu_type_id); the session's ``cpu_image`` is the base, so only the small
project layer is built here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.runpod import CPU_POD_HARDWARE, launch_and_preempt, pod_chain

pytestmark = [pytest.mark.runpod, pytest.mark.docker, pytest.mark.s3]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-train"
OVERLAY = CPU_POD_HARDWARE + """
[jobs.byo-pod]
hardware = "cpu"
project_dir = "{project}"
command = ["python", "train.py", "--steps", "20", "--save-every", "5"]
requirements = "requirements.txt"
data = "{data}"
stop_grace_seconds = 10
remote = "runpod"
"""


@pytest.fixture
def chain(tmp_path, s3, fake_runpod, docker_env, cpu_image, monkeypatch):
    from trainpod import storage

    data = s3.uri("datasets/xy")
    storage.sync_up(EXAMPLE / "data", data)
    yield from pod_chain(monkeypatch, tmp_path, s3, fake_runpod, docker_env, OVERLAY.format(project=EXAMPLE, data=data))


def test_example_job_runs_on_a_pod_mirrors_to_s3_and_the_pod_ends(chain, s3, tmp_path):
    from trainpod import storage

    res = subprocess.run([sys.executable, "-m", "trainpod", "launch", "byo-pod", "--remote", "runpod", "--yes",
                          "--max-runtime", "10"], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    (pod,) = chain.pods.values()
    assert pod.status == "TERMINATED"  # podside terminated its own pod
    assert pod.image.startswith(os.environ["TRAINPOD_REGISTRY"] + "/") and ":project-" in pod.image  # pushed
    registry = next(p for p in (tmp_path / "state" / "runs").glob("*.json"))
    record = json.loads(registry.read_text())
    run_id = record["run_id"]
    assert "python -m trainpod.pod.supervisor -- python -m trainpod.pod.jobrun" in pod.docker_args

    remote = s3.uri(f"trainpod/runs/{run_id}")  # the run's output is the pod's S3 mirror
    listed = set(storage.open_store(remote).list())
    assert {"model.json", "DONE", "POD_EXIT", "logs/train.log", "checkpoints/step-00000020/manifest.json"} <= listed
    pod_exit = json.loads(storage.read_bytes(remote + "/POD_EXIT") or b"{}")
    assert pod_exit["pod_id"] == pod.id and pod_exit["exit_code"] == 0

    local = tmp_path / "downloads" / run_id
    assert f"outputs downloaded to {local}" in res.stderr
    model = json.loads((local / "model.json").read_text())
    assert model["step"] == 20 and (local / "DONE").is_file()
    assert record["extra"]["downloaded"] == str(local) and record["backend"] == "runpod"
    assert any("done: w=" in line for line in res.stdout.splitlines())  # the job's log, followed from S3
    sweep = subprocess.run([sys.executable, "-m", "trainpod", "runs", "sweep", "--json"], capture_output=True,
                           text=True, timeout=60)
    assert sweep.returncode == 0 and json.loads(sweep.stdout) == [], sweep.stdout + sweep.stderr  # nothing billing


def test_max_runtime_watchdog_stops_the_job_pod_after_a_checkpoint(chain, s3, tmp_path):
    from trainpod import storage

    overlay = Path(os.environ["TRAINPOD_CONFIG"])
    overlay.write_text(overlay.read_text().replace('"--steps", "20"', '"--steps", "5000", "--step-seconds", "0.05"'))
    res = subprocess.run([sys.executable, "-m", "trainpod", "launch", "byo-pod", "--remote", "runpod", "--yes",
                          "--max-runtime", "0.2"], capture_output=True, text=True, timeout=240)
    assert res.returncode == 3, res.stdout + res.stderr  # contrib.EXIT_STOPPED: checkpointed on SIGTERM, then exited
    (pod,) = chain.pods.values()
    assert pod.status == "TERMINATED"
    run_id = json.loads(next((tmp_path / "state" / "runs").glob("*.json")).read_text())["run_id"]
    remote = s3.uri(f"trainpod/runs/{run_id}")
    listed = set(storage.open_store(remote).list())
    assert "DONE" not in listed and any(k.endswith("/manifest.json") for k in listed), sorted(listed)
    pod_exit = json.loads(storage.read_bytes(remote + "/POD_EXIT") or b"{}")
    assert pod_exit["exit_code"] == 3 and "max_runtime_minutes=0.2" in pod_exit["reason"], pod_exit
    assert storage.latest_complete_checkpoint(remote + "/checkpoints") is not None  # resumable from S3


def test_preempted_spot_job_is_relaunched_and_resumes_from_its_mirror(chain, s3, tmp_path):
    """A custom job on a spot pod: the pod is reclaimed after a checkpoint reached the mirror; the CLI rents a new
    pod whose jobrun takes the mirror's files back (log, the script's metrics) and hands the script its latest
    complete checkpoint, so the run ends at the same step with nothing lost and the first attempt's output kept."""
    from trainpod import storage

    overlay = Path(os.environ["TRAINPOD_CONFIG"])
    overlay.write_text(overlay.read_text().replace('"--steps", "20"', '"--steps", "40", "--step-seconds", "0.3"')
                       + 'sync_interval_seconds = 1\nlog_sync_interval_seconds = 0.5\n')
    rc, out, err = launch_and_preempt(chain, s3, ["launch", "byo-pod", "--remote", "runpod", "--yes", "--spot",
                                                  "--max-runtime", "10"], "/checkpoints/step-00000010/manifest.json")
    assert rc == 0, out + err
    assert "preempted: relaunching" in out
    first, second = chain.pods.values()
    assert first.spot and second.spot and second.name.endswith("-a1")
    assert (first.terminated_by, second.terminated_by) == ("account", "pod")
    run_id = json.loads(next((tmp_path / "state" / "runs").glob("*.json")).read_text())["run_id"]
    remote = s3.uri(f"trainpod/runs/{run_id}")
    model = json.loads(storage.read_bytes(remote + "/model.json"))
    resumed = int(model["resumed_from"].removeprefix("step-"))
    assert model["step"] == 40 and resumed >= 10
    steps = [json.loads(line)["step"] for line in storage.read_bytes(remote + "/metrics.jsonl").decode().splitlines()]
    assert steps[0] == 1 and set(steps) == set(range(1, 41))  # the first attempt's lines kept, nothing lost
    assert steps[-(40 - resumed):] == list(range(resumed + 1, 41))  # the second attempt continued from its checkpoint
    log = storage.read_bytes(remote + "/logs/train.log").decode()
    assert log.index("start at step 0") < log.index(f"start at step {resumed} (resume: step-{resumed:08d}")
    assert (tmp_path / "downloads" / run_id / "DONE").is_file()
