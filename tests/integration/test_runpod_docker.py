"""Fake RunPod pods as real containers on the local Docker engine (host networking).

Needs a running engine (scripts/docker-up.sh) and the bootstrapped base image; skipped with the
reason otherwise.
"""

from __future__ import annotations

import json
import shlex
import time

import pytest

from tests.fakes.runpod_api import DockerRunner
from trainpod.backends.runpod_api import GraphQLClient, PodRequest

pytestmark = [pytest.mark.runpod, pytest.mark.docker]

BASE_IMAGE = "trainpod/base:bookworm"
VALUES = {
    "QUOTES": 'say "hi" and \'bye\'',
    "NEWLINES": "line1\nline2\r\nline3",
    "BACKSLASH": "C:\\path\\\"x\"\\",
    "SUBSHELL": "$(id) ${HOME} `id`",
    "UNICODE": "Grüße — 東京 🚀",
}


@pytest.fixture
def docker_runner():
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
        client.images.get(BASE_IMAGE)
    except Exception as exc:  # noqa: BLE001 - any failure here means "no engine/image on this machine"
        pytest.skip(f"no Docker engine with {BASE_IMAGE}: {type(exc).__name__} (run scripts/docker-up.sh)")
    return DockerRunner(client)


def test_env_reaches_the_container_byte_exact_and_preemption_removes_it(fake_runpod, docker_runner):
    fake_runpod.runner = docker_runner
    fake_runpod.restart_on_exit = False
    client = GraphQLClient(fake_runpod.api_key, retries=2, backoff_s=0.01)
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    pod = client.deploy(PodRequest(name="trainpod-docker-a0", image=BASE_IMAGE, gpu_type_id="NVIDIA GeForce RTX 4090",
                                   env=VALUES, docker_args=shlex.join(["python3", "-c", dump])))
    container = fake_runpod.pods[pod.id].handle
    end = time.monotonic() + 30
    while client.pod(pod.id).desired_status == "RUNNING" and time.monotonic() < end:
        time.sleep(0.2)
    seen = json.loads(container.logs().decode())
    assert {k: seen[k] for k in VALUES} == VALUES
    assert seen["RUNPOD_POD_ID"] == pod.id and seen["RUNPOD_API_BASE_URL"].startswith("http://127.0.0.1:")
    assert container.attrs["HostConfig"]["NetworkMode"] == "host"
    fake_runpod.preempt(pod.id)
    assert docker_runner.client.containers.list(all=True, filters={"label": f"trainpod.fake-runpod={pod.id}"}) == []
