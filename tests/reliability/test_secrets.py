"""Canary secrets never leave their boxes: plans, logs, metadata, the run registry, error messages
and image layers are scanned for the canary values; the figure is the number of hits (must be 0).

Canaries are set the way users set them (environment): RUNPOD_API_KEY, AWS_SECRET_ACCESS_KEY,
HF_TOKEN, TRAINPOD_REGISTRY_PASSWORD. Then: ``launch --dry-run --json`` for every preset x backend
(through the CLI in-process with click's runner: 27 plans in well under a second each), one real
local smoke run through ``python -m trainpod launch`` (its stdout/stderr, output tree and the run
registry), error paths (an unreachable S3 endpoint and RunPod API, a missing bucket, an unknown
run), and — when the Docker engine is up — every layer of the built CPU image (``docker save``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.chaos

CANARIES = {
    "RUNPOD_API_KEY": "rpa_CANARYrunpodKey0123456789abcdef",
    "AWS_SECRET_ACCESS_KEY": "CANARY/awsSecret+Value/0123456789abcd",
    "HF_TOKEN": "hf_CANARYhuggingFaceToken0123456789",
    "TRAINPOD_REGISTRY_PASSWORD": "CANARY-registry-Pa$$w0rd-`id`-\"q\"",
}
BACKENDS = ("local", "docker", "runpod")


def hits(data: bytes | str, where: str) -> list[str]:
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else data
    return [f"{name} in {where}" for name, value in CANARIES.items() if value.encode() in raw]


def scan_tree(root: Path) -> tuple[int, list[str]]:
    files, found = 0, []
    for path in root.rglob("*"):
        if path.is_file():
            files += 1
            found += hits(path.read_bytes(), str(path))
    return files, found


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIACANARYACCESSKEY1")
    monkeypatch.setenv("TRAINPOD_REGISTRY_USERNAME", "chaos")
    monkeypatch.setenv("TRAINPOD_REGISTRY", "127.0.0.1:5055")
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", "s3://chaos-canary-bucket/trainpod")
    return CANARIES


def test_plans_logs_registry_and_errors_carry_no_secret(canaries, tmp_path, chaos_record, repo_root):
    from trainpod.commands import cli
    from trainpod.config.loader import load_catalog
    from trainpod.errors import TrainpodError

    runner = CliRunner()
    found: list[str] = []
    scanned = 0
    codes: dict[int, int] = {}
    for preset in load_catalog(use_cwd=False).presets:
        for backend in BACKENDS:
            res = runner.invoke(cli, ["launch", preset, "--remote", backend, "--dry-run", "--json"])
            refused = isinstance(res.exception, TrainpodError)  # `python -m trainpod` prints it, exit 2
            code = 2 if refused else res.exit_code
            codes[code] = codes.get(code, 0) + 1
            assert code in (0, 2), (preset, backend, res.output, res.exception)
            text = res.output + str(res.exception or "") + repr(getattr(res.exception, "hint", ""))
            found += hits(text, f"dry-run {preset}/{backend}")
            scanned += 1
            if res.exit_code == 0 and backend != "local":
                plan = json.loads(res.stdout)
                assert any(v == "***" for v in plan["env"].values()) or plan["secret_env"], (preset, backend)

    # one real local run end to end through the CLI: its output, log, metadata and the run registry
    out_root = tmp_path / "runs"
    local_env = {k: v for k, v in os.environ.items() if k != "TRAINPOD_STORAGE_URI"} | {"OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "trainpod", "launch", "smoke", "--remote", "local",
                          "--set", "max_steps=2", "--set", "save_steps=1", "--output-dir", str(out_root)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=local_env)
    assert run.returncode == 0, run.stdout + run.stderr
    found += hits(run.stdout + run.stderr, "local launch output")
    n_out, out_hits = scan_tree(out_root)
    n_state, state_hits = scan_tree(Path(os.environ["TRAINPOD_STATE_DIR"]))
    found += out_hits + state_hits
    assert n_out >= 10 and any((out_root).rglob("metadata.json")) and n_state >= 1
    scanned += n_out + n_state + 1

    # error paths: unreachable endpoints, a missing bucket, an unknown run, a bad key at the API
    env = {**os.environ, "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1",
           "RUNPOD_API_BASE_URL": "http://127.0.0.1:9"}
    errors = [
        ("data", "ls", "s3://chaos-canary-bucket/x"),
        ("data", "push", str(repo_root / "profiles" / "data" / "sample"), "s3://no-such-bucket/x"),
        ("runs", "status", "no-such-run"),
        ("runs", "sweep"),
        ("launch", "oracle-rauru-cloud", "--remote", "runpod", "--detach", "--yes"),
    ]
    for args in errors:
        res = subprocess.run([sys.executable, "-m", "trainpod", *args], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path, env=env)
        assert res.returncode != 0, args
        assert "Traceback" not in res.stderr, (args, res.stderr[-2000:])
        found += hits(res.stdout + res.stderr, "error: " + " ".join(args))
        scanned += 1

    chaos_record("canary secrets: plans/logs/metadata/registry/errors", scanned, scanned - len(found),
                 f"{len(found)} hits in {scanned} outputs ({len(CANARIES)} canaries, "
                 f"{sum(codes.values())} dry-runs: {codes.get(0, 0)} plans, {codes.get(2, 0)} refused)")
    assert not found, found


@pytest.mark.docker
def test_image_layers_carry_no_secret(canaries, docker_env, cpu_image, tmp_path, chaos_record):
    from trainpod import images
    from trainpod.config.loader import load_catalog
    from trainpod.settings import load_settings

    hw = load_catalog(use_cwd=False).get("hardware", "cpu")
    plan = images.image_plan("cpu", hw, load_settings(), base_image=docker_env.base_image)  # canaries in env
    found = hits(json.dumps(plan.model_dump(mode="json") if hasattr(plan, "model_dump") else repr(plan)),
                 "image plan")
    tar_path = tmp_path / "image.tar"
    with open(tar_path, "wb") as fh:
        for chunk in docker_env.client().images.get(cpu_image.tag).save(named=True):
            fh.write(chunk)
    members = 0
    overlap = max(len(v) for v in CANARIES.values())
    with tarfile.open(tar_path) as outer:
        for member in outer:
            if not member.isfile():
                continue
            members += 1
            fh = outer.extractfile(member)
            tail = b""
            while chunk := fh.read(1 << 20):
                found += hits(tail + chunk, f"{cpu_image.tag}:{member.name}")
                tail = chunk[-overlap:]
    history = docker_env.client().api.history(cpu_image.tag)
    found += hits(json.dumps(history), "image history")
    chaos_record("canary secrets: image layers (docker save)", members, members - len(set(found)),
                 f"{len(found)} hits in {members} tar members, {tar_path.stat().st_size >> 20} MiB")
    assert not found, found
