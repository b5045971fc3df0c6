"""A launch ensures its images, base first, for presets and jobs alike, and hashes each build context once.

The images live under a repository name no one else uses (``TRAINPOD_IMAGE_REPOSITORY``), so neither the
hardware image nor the project image exists before the launch: the example job must still just work (it used
to fail with "build the hardware image first"). Only this test's own tags are removed afterwards.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from trainpod import images, launcher

pytestmark = [pytest.mark.docker]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-train"
EXAMPLE_TOML = str(EXAMPLE / "training.toml")


@pytest.fixture
def fresh_repository(docker_env, cpu_image, monkeypatch):
    """A repository name with no image under it (the CPU image's content exists on the engine under its own name,
    so the hardware step is a retag, not a cold build); this test's tags are removed at the end."""
    repo = f"trainpod-fresh-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("TRAINPOD_IMAGE_REPOSITORY", repo)
    monkeypatch.setenv("TRAINPOD_BASE_IMAGE", docker_env.base_image)
    yield repo
    client = docker_env.client()
    for image in client.images.list(name=repo):
        for tag in image.tags:
            if tag.startswith(f"{repo}:"):
                with contextlib.suppress(Exception):
                    client.images.remove(tag, noprune=True)


def test_example_job_launches_where_neither_of_its_images_exists(docker_env, fresh_repository, tmp_path):
    client = docker_env.client()
    cmd = [sys.executable, "-m", "trainpod", "--config", EXAMPLE_TOML, "launch", "byo-example", "--remote", "docker",
           "--output-dir", str(tmp_path / "runs")]
    dry = subprocess.run([*cmd, "--dry-run", "--json"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    project_tag, base_tag = plan["image"], plan["spec"]["workload"]["base_image"]
    assert project_tag.startswith(f"{fresh_repository}:project-") and base_tag.startswith(f"{fresh_repository}:cpu-")
    assert not images.image_exists(client, base_tag) and not images.image_exists(client, project_tag)

    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert images.image_exists(client, base_tag) and images.image_exists(client, project_tag)
    (out,) = (tmp_path / "runs").iterdir()
    assert (out / "DONE").is_file() and json.loads((out / "model.json").read_text())["step"] == 40
    with contextlib.suppress(Exception):
        client.containers.get(out.name).remove(force=True)


def test_a_launch_hashes_each_build_context_once(docker_env, fresh_repository, tmp_path):
    """prepare plans the images (hardware, then the project layer) once; submit builds from those plans."""
    images.context_hashes.clear()
    req = launcher.LaunchRequest(preset="byo-example", remote="docker", config=EXAMPLE_TOML,
                                 output_dir=str(tmp_path / "runs"))
    prep, handle = launcher.submit(launcher.prepare(req))
    lines = list(launcher.follow(prep.backend, handle))
    assert prep.backend.status(handle).state == "succeeded", "\n".join(lines[-20:])
    assert dict(images.context_hashes) == {"hardware:cpu": 1, f"project:{EXAMPLE.resolve()}": 1}
    with contextlib.suppress(Exception):
        docker_env.client().containers.get(handle.run_id).remove(force=True)
