"""Training in a container on the real engine: the docker backend end to end.

- ``smoke`` runs to completion in the CPU image: adapter + metadata.json + DONE in the host output dir, readable
  by the launching user; ``trainpod runs logs`` / ``status`` / ``list`` show it;
- ``trainpod runs cancel`` mid-run: SIGTERM reaches the trainer (the entrypoint execs), a complete checkpoint is
  left behind, the container is removed, the state is ``cancelled``; cancelling again is a no-op;
- the CLI path CI uses: ``trainpod build smoke`` then ``trainpod launch smoke --remote docker``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainpod.backends.docker import DockerBackend
from trainpod.manifest import latest_complete
from trainpod.runs import RunRegistry
from trainpod.settings import load_settings

pytestmark = pytest.mark.docker

CANARY = "docker-canary-Secret-31415"


def _trainpod(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainpod", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _wait(backend: DockerBackend, handle, until, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = backend.status(handle)
        if until(st):
            return st
        assert st.state in ("pending", "running"), (st, "\n".join(backend.logs(handle)))
        time.sleep(0.5)
    pytest.fail(f"timed out; last status {st}:\n" + "\n".join(list(backend.logs(handle))[-30:]))


def _submit(make_spec, cpu_image, image_tree: Path, out: Path, run_id: str, **hp):
    spec = make_spec("smoke", run_id=run_id, dataset=str(image_tree / "profiles" / "data" / "sample"),
                     output=str(out), image=cpu_image.tag, overrides=hp)
    settings = load_settings()
    backend = DockerBackend()
    plan = backend.plan(spec, settings)
    return backend, backend.submit(plan, settings), settings


def test_smoke_trains_in_a_container(docker_env, cpu_image, image_tree, make_spec, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", CANARY)  # injected at submit, must never be printed
    out = tmp_path / "out"
    run_id = f"smoke-docker-{os.getpid()}-{int(time.time())}"
    backend, handle, settings = _submit(make_spec, cpu_image, image_tree, out, run_id)
    try:
        st = _wait(backend, handle, lambda s: s.state not in ("pending", "running"))
        assert st.state == "succeeded" and st.exit_code == 0, (st, "\n".join(backend.logs(handle)))
        assert (out / "DONE").is_file() and (out / "metadata.json").is_file()
        assert (out / "adapter" / "adapter_config.json").is_file() or list(out.rglob("adapter_model.safetensors"))
        meta = json.loads((out / "metadata.json").read_text())
        assert CANARY not in json.dumps(meta)
        assert os.access(out / "metadata.json", os.R_OK)  # readable by whoever launched the run
        assert st.step == 30

        env = {"DOCKER_HOST": docker_env.docker_host, "TRAINPOD_STATE_DIR": str(settings.state_path)}
        logs = _trainpod("runs", "logs", run_id, env=env)
        assert logs.returncode == 0, logs.stderr
        assert "step" in logs.stdout and CANARY not in logs.stdout
        status = _trainpod("runs", "status", run_id[:20], env=env)  # unique prefix
        assert json.loads(status.stdout)["state"] == "succeeded", status.stderr
        listed = _trainpod("runs", "list", "--json", env=env)
        assert [r["state"] for r in json.loads(listed.stdout) if r["run_id"] == run_id] == ["succeeded"]
    finally:
        docker_env.client().containers.get(handle.provider_id).remove(force=True)


def test_cancel_mid_run_leaves_a_complete_checkpoint(docker_env, cpu_image, image_tree, make_spec, tmp_path) -> None:
    out = tmp_path / "out"
    run_id = f"cancel-docker-{os.getpid()}-{int(time.time())}"
    backend, handle, settings = _submit(make_spec, cpu_image, image_tree, out, run_id,
                                        max_steps=5000, save_steps=4000, eval_steps=4000)
    _wait(backend, handle, lambda s: s.state == "running" and (s.step or 0) >= 3)
    env = {"DOCKER_HOST": docker_env.docker_host, "TRAINPOD_STATE_DIR": str(settings.state_path)}
    started = time.monotonic()
    result = _trainpod("runs", "cancel", run_id, env=env)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60, "cancel waited for the kill timeout: SIGTERM did not reach the trainer"
    latest = latest_complete(out / "checkpoints")
    assert latest is not None and int(latest.name.split("-")[1]) >= 3
    record = RunRegistry(settings.state_path).get(run_id)
    assert record.extra["cancelled"] is True
    st = backend.status(record)
    assert st.state == "cancelled", st
    assert not docker_env.client().containers.list(all=True, filters={"name": run_id})
    # logs survive the container (from logs/train.log) and show the graceful stop
    assert any("SIGTERM" in line for line in backend.logs(record))
    again = _trainpod("runs", "cancel", run_id, env=env)  # idempotent
    assert again.returncode == 0, again.stderr


def test_cli_build_then_launch_smoke(docker_env, tmp_path) -> None:
    """What CI runs: build the image for the smoke preset, then launch it on the engine and follow it."""
    env = {"DOCKER_HOST": docker_env.docker_host, "TRAINPOD_STATE_DIR": str(tmp_path / "state"),
           "TRAINPOD_BASE_IMAGE": docker_env.base_image}
    built = _trainpod("build", "smoke", env=env, timeout=900)
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith(("built: trainpod:cpu-", "up to date: trainpod:cpu-"))
    launched = _trainpod("launch", "smoke", "--remote", "docker", "--output-dir", str(tmp_path / "runs"), env=env)
    assert launched.returncode == 0, launched.stdout + launched.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "DONE").is_file() and (run_dir / "metadata.json").is_file()
    for c in docker_env.client().containers.list(all=True, filters={"name": run_dir.name}):
        c.remove(force=True)
