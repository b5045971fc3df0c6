"""The plan summary (``launch --dry-run``), the machine plan (``--json``) and ``--show-request``.

Snapshots: every shipped preset on every backend whose ``plan()`` accepts it, built from a fixed RunSpec (run
id, time, commit, image tag) so only a change to what the summary says changes a file. The packaged data
directory is written as ``<defaults>``. Regenerate after an intended change with ``UPDATE_SNAPSHOTS=1``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import trainpod
from trainpod import summary
from trainpod.backends import get_backend
from trainpod.config.loader import load_catalog
from trainpod.errors import TrainpodError
from trainpod.launcher import launch_shape
from trainpod.settings import Settings
from trainpod.spec import RunSpec, StorageURIs

SNAPSHOTS = Path(__file__).parent / "test_summary_snapshots"
PRESETS = sorted(load_catalog(use_cwd=False).presets)
BACKENDS = ("local", "docker", "runpod")
DEFAULTS = str(Path(trainpod.__file__).resolve().parent / "_defaults")
REPO = str(Path(__file__).resolve().parents[2])  # the checkout: shown as <repo>, so snapshots hold in any clone
RUNPOD_PRESETS = {"oracle-rauru-cloud", "oracle-rauru-a100", "oracle-rauru-2x4090", "oracle-rauru-4xa100-full",
                  "oracle-rauru-2x8h100-full", "oracle-rauru-2x8a100-lora"}


def _spec(preset: str, backend: str) -> RunSpec:
    cfg = load_catalog(use_cwd=False).resolve(preset)
    run_id = f"{preset}-20260101-000000-abcdef"
    image = None
    if backend == "docker" and cfg.hardware.image != "none":
        image = f"trainpod:{cfg.hardware.image}-0123456789ab"
    elif backend == "runpod":
        image = f"ghcr.io/acme/trainpod:{cfg.hardware.image}-0123456789ab"
    output = f"s3://bucket/trainpod/runs/{run_id}" if backend == "runpod" else f"/srv/trainpod/runs/{run_id}"
    return RunSpec(run_id=run_id, created="2026-01-01T00:00:00+00:00", git_commit="0" * 40, remote=backend,
                   config=cfg, image=image, storage=StorageURIs(dataset=cfg.dataset.path, output=output),
                   launch=launch_shape(cfg), trainpod_version="0.1.0")


def _settings(tmp_path: Path) -> Settings:
    return Settings(storage_uri="s3://bucket/trainpod", state_dir=str(tmp_path / "state"), aws_region="eu-west-1")


def _text(preset: str, backend: str, tmp_path: Path) -> str | None:
    """The plain summary, or None where the backend refuses the preset."""
    spec = _spec(preset, backend)
    name = "runpod-cluster" if backend == "runpod" and spec.launch.nnodes > 1 else backend  # as launch picks it
    try:
        plan = get_backend(name).plan(spec, _settings(tmp_path))
    except TrainpodError:
        return None
    facts = summary.gather_facts(plan, _settings(tmp_path), probe_images=False)
    facts = dataclasses.replace(facts, missing_packages=())  # depends on the venv, not on the plan
    return summary.render_text(summary.build(plan, facts)).replace(DEFAULTS, "<defaults>").replace(REPO, "<repo>")


@pytest.mark.parametrize("preset", PRESETS)
def test_plan_summary_snapshot_for_every_backend(preset: str, tmp_path: Path) -> None:
    shown = {b: _text(preset, b, tmp_path) for b in BACKENDS}
    planned = [b for b, text in shown.items() if text is not None]
    assert planned, f"no backend plans {preset}"
    if preset in RUNPOD_PRESETS:
        assert "runpod" in planned
    for backend in planned:
        text = shown[backend]
        assert text is not None
        lines = text.splitlines()
        assert len(lines) < 30, f"{preset} on {backend}: {len(lines)} lines"
        assert not any(ord(c) < 32 and c != "\n" for c in text), "control characters in the plain summary"
        path = SNAPSHOTS / f"{preset}--{backend}.txt"
        if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            if os.environ.get("UPDATE_SNAPSHOTS") != "1":
                pytest.fail(f"snapshot {path.name} was missing and has been written; re-run")
        assert text == path.read_text(encoding="utf-8"), f"summary changed: see {path} (UPDATE_SNAPSHOTS=1)"


def test_runpod_summary_states_cost_gpu_cuda_output_and_guards(tmp_path: Path) -> None:
    text = _text("oracle-rauru-cloud", "runpod", tmp_path)
    assert text is not None
    assert "about $2.76 ($0.69/GPU-h x 1 GPU x 4.00 h)" in text
    assert "1x NVIDIA GeForce RTX 4090, fallback NVIDIA RTX A6000" in text
    floor = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud").hardware.cuda_version
    assert f"CUDA floor    >= {floor}" in text and "COMMUNITY" in text
    assert "runpod (rest-v2 POST /v2/pods)" in text
    assert "s3://bucket/trainpod/runs/oracle-rauru-cloud-20260101-000000-abcdef" in text
    assert "max runtime 240 min, max cost $5.00, on-demand" in text
    assert "price_per_gpu_hour" in text  # the price source
    assert "warnings" not in text  # a registry image, no long-lived key: nothing to warn about


def test_warnings_name_the_unpullable_image_and_long_lived_keys(tmp_path: Path) -> None:
    spec = _spec("oracle-rauru-cloud", "runpod").model_copy(update={"image": "trainpod:cuda-0123456789ab"})
    settings = Settings(storage_uri="s3://bucket/trainpod", state_dir=str(tmp_path), aws_access_key_id="AKIAX",
                        aws_secret_access_key="never-shown", allow_long_lived_credentials=True)
    plan = get_backend("runpod").plan(spec, settings)
    built = summary.build(plan, summary.Facts(missing_packages=("runpod (pip install 'trainpod[runpod]')",)))
    text = summary.render_text(built)
    assert "image trainpod:cuda-0123456789ab names no registry: a pod can never pull it" in text
    assert "TRAINPOD_REGISTRY" in text
    assert ("  ! AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: your own long-lived AWS credentials (everything they "
            "can reach)") in text
    assert "never-shown" not in text
    assert "missing optional dependency: runpod (pip install 'trainpod[runpod]')" in text
    assert len(text.splitlines()) < 30
    # by default the pod gets a run-scoped session: a row says so, and there is nothing to warn about
    plan = get_backend("runpod").plan(_spec("oracle-rauru-cloud", "runpod"), _settings(tmp_path))
    text = summary.render_text(summary.build(plan))
    assert "long-lived" not in text
    assert "pod receives  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN: STS " in text


def test_image_and_dataset_facts_are_shown(tmp_path: Path) -> None:
    plan = get_backend("runpod").plan(_spec("oracle-rauru-cloud", "runpod"), _settings(tmp_path))
    built = summary.render_text(summary.build(plan, summary.Facts(image_local=True, image_in_registry=False)))
    assert "(built; not in the registry yet: launch pushes it)" in built
    built = summary.render_text(summary.build(plan, summary.Facts(image_local=False)))
    assert "(not built yet: launch builds it)" in built
    local = get_backend("local").plan(_spec("smoke", "local"), _settings(tmp_path))
    facts = summary.gather_facts(local, _settings(tmp_path))
    data = Path(DEFAULTS) / "data" / "sample"
    size = sum(f.stat().st_size for f in data.iterdir())
    assert (facts.dataset_bytes, facts.dataset_files, facts.dataset_missing) == (size, 3, False)
    moved = local.spec.model_copy(update={"storage": StorageURIs(dataset=str(tmp_path / "nope"),
                                                                 output=local.spec.storage.output)})
    plan = get_backend("local").plan(moved, _settings(tmp_path))
    text = summary.render_text(summary.build(plan, summary.gather_facts(plan, _settings(tmp_path))))
    assert f"dataset path {tmp_path / 'nope'} does not exist" in text


def test_duration_comes_from_the_previous_run_of_the_preset(tmp_path: Path) -> None:
    from trainpod.backends.base import RunHandle
    from trainpod.runs import RunRegistry

    settings = _settings(tmp_path)
    out = tmp_path / "old"
    out.mkdir()
    (out / "metadata.json").write_text(json.dumps({
        "training": {"duration_seconds": 20.0, "steps": 15, "tokens_per_second": 1234.0},
        "hardware": {"name": "Generic CPU (x86-64 / arm64)"}}))
    RunRegistry(settings.state_path).save(RunHandle(run_id="smoke-old", backend="local", preset="smoke",
                                                    output=str(out), created="2025-01-01T00:00:00+00:00"))
    plan = get_backend("local").plan(_spec("smoke", "local"), settings)
    text = summary.render_text(summary.build(plan, summary.gather_facts(plan, settings)))
    # 30 planned steps at the old run's pace (15 steps in 20 s)
    assert "duration      about 40 s of training (from run smoke-old, scaled 15 -> 30 steps, 1,234 tokens/s)" in text


def test_an_instant_cluster_is_paid_and_states_nodes_gpus_and_cost(tmp_path: Path) -> None:
    text = _text("oracle-rauru-2x8h100-full", "runpod", tmp_path)
    assert text is not None and text.startswith("launch plan: oracle-rauru-2x8h100-full on runpod-cluster")
    assert "2 nodes x 8x NVIDIA H100 80GB HBM3" in text and "2 nodes x 8 GPUs (deepspeed)" in text
    assert "about $143.53 ($2.99/GPU-h x 16 GPU x 3.00 h)" in text
    spec = _spec("oracle-rauru-2x8h100-full", "runpod")
    built = summary.build(get_backend("runpod-cluster").plan(spec, _settings(tmp_path)))
    assert built.paid
    with pytest.raises(TrainpodError, match="no terminal to confirm on"):
        summary.confirm_spend(built)


def test_confirm_refuses_without_a_terminal_and_yes_skips(tmp_path: Path) -> None:
    plan = get_backend("runpod").plan(_spec("oracle-rauru-cloud", "runpod"), _settings(tmp_path))
    built = summary.build(plan)
    with pytest.raises(TrainpodError) as exc:  # pytest's stdin is not a terminal
        summary.confirm_spend(built)
    assert exc.value.exit_code == 2 and "--yes" in (exc.value.hint or "") and "TRAINPOD_YES=1" in exc.value.hint
    assert "$2.76" in exc.value.message and "max cost $5.00" in exc.value.message
    summary.confirm_spend(built, yes=True)  # no question, no error
    local = get_backend("local").plan(_spec("smoke", "local"), _settings(tmp_path))
    summary.confirm_spend(summary.build(local))  # local launches never ask


def test_machine_plan_holds_the_runspec_once(tmp_path: Path) -> None:
    plan = get_backend("runpod").plan(_spec("oracle-rauru-cloud", "runpod"), _settings(tmp_path))
    doc = summary.machine_plan(plan, summary.build(plan))
    text = json.dumps(doc)
    assert text.count('schema_version') == 1, "the RunSpec is embedded more than once"
    assert doc["format"] == summary.PLAN_FORMAT and doc["spec"]["run_id"] == plan.run_id
    assert doc["env"]["TRAINPOD_RUN_SPEC"] == summary.SPEC_REF
    assert summary.SPEC_REF in json.dumps(doc["provider_request"])
    assert RunSpec.model_validate(doc["spec"]) == plan.spec
    assert doc["summary"]["estimated_cost_usd"] == 2.76
    # the exact request still carries the spec, verbatim
    request = summary.provider_request(plan)
    assert plan.spec.to_json() in json.dumps(request) or json.dumps(plan.spec.to_json())[1:-1] in json.dumps(request)


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainpod", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_dry_run_prints_the_summary_plain_when_piped(tmp_path: Path) -> None:
    out = _cli("launch", "smoke", "--remote", "local", "--dry-run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "launch plan: smoke on local" and len(lines) < 30
    assert "\x1b" not in out.stdout + out.stderr
    assert any(line.split()[:1] == ["cost"] for line in lines)
    assert not (tmp_path / "runs").exists()


def test_json_and_show_request_from_the_cli(tmp_path: Path) -> None:
    env = {"TRAINPOD_STORAGE_URI": "s3://bucket/x", "TRAINPOD_REGISTRY": "127.0.0.1:5055",
           "AWS_SECRET_ACCESS_KEY": "s3cr3t-canary-summary", "AWS_ACCESS_KEY_ID": "AKIAX"}
    out = _cli("launch", "oracle-rauru-cloud", "--remote", "runpod", "--json", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert out.stdout.count('"schema_version"') == 1
    assert doc["env"]["AWS_SECRET_ACCESS_KEY"] == "***" and "s3cr3t-canary-summary" not in out.stdout
    assert doc["summary"]["paid"] is True
    docker = _cli("launch", "smoke", "--remote", "docker", "--json", cwd=tmp_path)
    assert docker.returncode == 0, docker.stderr
    assert docker.stdout.count('"schema_version"') == 1
    inner = json.loads(docker.stdout)["spec_in_container"]  # what differs inside the container: the mounts
    assert inner["storage"] == {"dataset": "/data", "output": "/output"}
    req = _cli("launch", "oracle-rauru-cloud", "--remote", "runpod", "--show-request", env=env, cwd=tmp_path)
    assert req.returncode == 0, req.stderr
    shown = json.loads(req.stdout)
    assert shown["backend"] == "runpod" and "s3cr3t-canary-summary" not in req.stdout
    assert '\\"schema_version\\"' in req.stdout  # the full RunSpec, as sent
    assert "***" in req.stdout
