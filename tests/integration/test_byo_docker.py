"""The example project (examples/byo-train) as a project image layer on the CPU training image, run in a real
container by the job Docker backend: data mounted read-only, outputs and checkpoints on the host, DONE last,
the output mirrored from inside the container to the loopback S3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainpod import launcher
from trainpod.manifest import verify_dir

pytestmark = [pytest.mark.docker, pytest.mark.s3]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-train"


def test_example_job_runs_in_its_project_image_and_mirrors_to_s3(docker_env, cpu_image, s3, tmp_path, monkeypatch):
    from trainpod.config import load_catalog
    from trainpod.images import project_image_plan
    from trainpod.jobs import prepare_job
    from trainpod.settings import load_settings

    config = str(EXAMPLE / "training.toml")
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", s3.uri("team"))
    settings = load_settings(None, config=config, output_dir=str(tmp_path / "runs"))
    req = launcher.LaunchRequest(preset="byo-example", remote="docker", config=config)
    prep = prepare_job(req, settings, load_catalog(settings.config), None, base_image=cpu_image.tag)

    plan = prep.plan
    project = project_image_plan(cpu_image.tag, EXAMPLE, "requirements.txt", settings)
    assert plan.image == project.tag and ":project-" in project.tag
    assert "project/train.py" in project.context_files
    assert not [f for f in project.context_files if f.startswith("project/data/")]  # .dockerignore honoured
    assert plan.command == ["python", "-m", "trainpod.jobrun"]
    assert {(m.target, m.read_only) for m in plan.mounts} == {("/output", False), ("/data", True)}

    prep, handle = launcher.submit(prep)  # builds the project layer (seconds: requirements are empty)
    lines = list(launcher.follow(prep.backend, handle))
    status = prep.backend.status(handle)
    assert status.state == "succeeded", "\n".join(lines[-30:])
    out = Path(handle.extra["host_output"])
    model = json.loads((out / "model.json").read_text())
    assert model["step"] == 40 and (out / "DONE").is_file()
    assert not verify_dir(out / "checkpoints" / "step-00000040")
    assert any("done: w=" in line for line in lines)
    from trainpod import storage

    remote = s3.uri(f"team/runs/{handle.run_id}")  # the container reached the loopback S3 over host networking
    assert {"model.json", "DONE", "checkpoints/step-00000040/manifest.json"} <= set(storage.open_store(remote).list())
    assert "AWS_SECRET_ACCESS_KEY" in plan.secret_env and s3.proxy.counts["PUT"] > 0

    client = docker_env.client()
    listing = client.containers.run(project.tag, ["ls", "-a", "/opt/project"], remove=True, network_mode="host")
    names = listing.decode().split()
    assert "train.py" in names and "data" not in names and ".dockerignore" in names
    client.containers.get(handle.run_id).remove(force=True)
