"""The example project (examples/byo-train) as a project image layer on the CPU training image, run in a real
container by the job Docker backend: data mounted read-only, outputs and checkpoints on the host, DONE last,
the output mirrored from inside the container to the loopback S3."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest

from trainpod import launcher
from trainpod.manifest import verify_dir

pytestmark = [pytest.mark.docker, pytest.mark.s3]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-train"


def test_example_job_runs_in_its_project_image_and_mirrors_to_s3(docker_env, cpu_image, s3, tmp_path, monkeypatch):
    from trainpod.images import project_image_plan

    config = str(EXAMPLE / "training.toml")
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", s3.uri("team"))
    req = launcher.LaunchRequest(preset="byo-example", remote="docker", config=config,
                                 output_dir=str(tmp_path / "runs"), extra={"base_image": cpu_image.tag})
    prep = launcher.prepare(req)
    settings = prep.settings

    plan = prep.plan
    project = project_image_plan(cpu_image.tag, EXAMPLE, "requirements.txt", settings)
    assert plan.image == project.tag and ":project-" in project.tag
    assert "project/train.py" in project.context_files
    assert not [f for f in project.context_files if f.startswith("project/data/")]  # .dockerignore honoured
    assert plan.command == ["python", "-m", "trainpod.pod.jobrun"]
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


def _wheel(dest: Path, name: str, version: str, body: str) -> Path:
    """A pure-Python wheel written by hand (no build backend, no network): what a wheelhouse holds."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": body,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: trainpod-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join(record + [f"{dist}/RECORD,,"]) + "\n"
    out = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return out


def test_project_requirements_install_through_the_ca_bundle_and_wheelhouse_without_keeping_them(
        docker_env, cpu_image, tmp_path):
    """A project's pins are installed in a deps stage that sees the extra CA bundle (pip behind this host's
    TLS-intercepting proxy) and the wheelhouse; the image gets only what pip installed, and nothing the
    hardware image already has (torch) is installed twice."""
    import subprocess

    from trainpod.images import build_project, project_image_plan
    from trainpod.images.fetch import pip_sources
    from trainpod.settings import load_settings

    ca = pip_sources().cert or subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True).stdout.strip()
    if not ca or not Path(ca).is_file():
        pytest.skip("no CA bundle configured for pip on this host")
    house = tmp_path / "wheels"
    house.mkdir()
    _wheel(house, "tp_hello", "1.0", "GREETING = 'hello from the wheelhouse'\n")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "requirements.txt").write_text("tp-hello==1.0  # only in the wheelhouse\ntomli-w==1.0.0  # from PyPI\n"
                                              "torch  # already in the hardware image\n")
    (project / "main.py").write_text("print('ok')\n")
    settings = load_settings(None)
    plan = project_image_plan(cpu_image.tag, project, "requirements.txt", settings, ca_bundle=ca,
                              wheelhouse=str(house))
    assert "build/ca/ca-bundle.crt" in plan.context_files and "build/wheels/tp_hello-1.0-py3-none-any.whl" in plan.context_files
    bare = project_image_plan(cpu_image.tag, project, "requirements.txt", settings, ca_bundle="", wheelhouse="")
    assert bare.tag == plan.tag  # fetch helpers are not content
    client = docker_env.client()
    lines: list[str] = []
    try:
        assert build_project(plan, client=client, on_line=lines.append), "\n".join(lines[-30:])
        probe = ("import tp_hello, tomli_w, torch; print(tp_hello.GREETING); print(tomli_w.__file__); "
                 "print(torch.__file__)")
        out = client.containers.run(plan.tag, ["python", "-c", probe], remove=True, network_mode="host").decode()
        greeting, tomli_path, torch_path = out.strip().splitlines()[-3:]
        assert greeting == "hello from the wheelhouse"
        assert tomli_path.startswith("/opt/project-deps/site-packages/")
        assert torch_path.startswith("/opt/venv/")  # not installed again into the project prefix
        found = client.containers.run(
            plan.tag, ["sh", "-c", "find / -xdev \\( -name ca-bundle.crt -o -name 'tp_hello-*.whl' -o -path /tmp/build \\) "
                                   "-print 2>/dev/null; ls /opt/project-deps/site-packages"],
            remove=True, network_mode="host").decode()
        assert "ca-bundle.crt" not in found and "tp_hello-1.0-py3" not in found and "/tmp/build" not in found, found
        assert "torch" not in found.split()
        history = " ".join(str(h.get("CreatedBy", "")) for h in client.api.history(plan.tag))
        assert "build/" not in history and "PIP_CERT" not in history
    finally:
        import docker

        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(plan.tag, force=True)
