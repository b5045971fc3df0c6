"""Dry-run snapshots of the docker backend for every hardware profile (no engine needed).

The snapshot is the plan exactly as ``--dry-run`` prints it (container request + ``docker run`` line), with
the embedded RunSpec JSON replaced by a placeholder (it is checked structurally below, so schema additions
elsewhere do not churn these files). Regenerate after an intended change with ``UPDATE_SNAPSHOTS=1``.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest

from trainpod.backends import get_backend
from trainpod.backends.base import LaunchPlan
from trainpod.backends.docker import DockerBackend
from trainpod.config.loader import load_catalog
from trainpod.errors import ConfigError, UnsupportedError
from trainpod.launcher import launch_shape
from trainpod.settings import Settings
from trainpod.spec import RunSpec

SNAPSHOTS = Path(__file__).parent / "test_docker_plan_snapshots"
HARDWARE = sorted(load_catalog(use_cwd=False).table("hardware"))
IMAGE = "registry.example/trainpod:snapshot"
SPEC_PLACEHOLDER = "<RunSpec JSON>"


def _settings(**kw: str) -> Settings:
    return Settings(state_dir="/home/user/.local/state/trainpod", **kw)


def _plan(make_spec, hardware: str, settings: Settings | None = None, uid: int = 1000) -> LaunchPlan:
    # several nodes need an output every node reaches (the docker backend refuses a local one for them)
    multi = load_catalog(use_cwd=False).get("hardware", hardware).nnodes > 1
    spec = make_spec("smoke", hardware, dataset="/srv/datasets/sample",
                     output="s3://bucket/runs/smoke" if multi else "/srv/runs/smoke", image=IMAGE)
    spec = spec.model_copy(update={"launch": launch_shape(spec.config)})
    return DockerBackend(uid=uid, gid=uid, cpus=8).plan(spec, settings or _settings())


def _snapshot_view(plan: LaunchPlan) -> dict:
    shown = plan.display()
    shown.pop("spec")
    shown["env"]["TRAINPOD_RUN_SPEC"] = SPEC_PLACEHOLDER
    quoted = shlex.quote("TRAINPOD_RUN_SPEC=" + plan.env["TRAINPOD_RUN_SPEC"])
    shown["provider_request"]["docker_run"] = plan.provider_request["docker_run"].replace(
        quoted, f"'TRAINPOD_RUN_SPEC={SPEC_PLACEHOLDER}'")
    for node in shown["provider_request"].get("nodes", []):  # one container per node, each with the spec
        node["docker_run"] = node["docker_run"].replace(quoted, f"'TRAINPOD_RUN_SPEC={SPEC_PLACEHOLDER}'")
    return shown


def _runnable(name: str) -> bool:
    hw = load_catalog(use_cwd=False).get("hardware", name)
    return hw.supported and hw.image != "none"


@pytest.mark.parametrize("hardware", [h for h in HARDWARE if _runnable(h)])
def test_dry_run_snapshot(make_spec, hardware: str) -> None:
    view = _snapshot_view(_plan(make_spec, hardware))
    path = SNAPSHOTS / f"{hardware}.json"
    text = json.dumps(view, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if os.environ.get("UPDATE_SNAPSHOTS") != "1":
            pytest.fail(f"snapshot {path.name} was missing and has been written; re-run")
    assert json.loads(text) == json.loads(path.read_text(encoding="utf-8")), f"plan changed: see {path}"


@pytest.mark.parametrize("hardware", [h for h in HARDWARE if _runnable(h)])
def test_plan_shape(make_spec, hardware: str) -> None:
    plan = _plan(make_spec, hardware)
    hw = plan.spec.config.hardware
    req = plan.provider_request["container"]
    assert req["network_mode"] == "host" and req["name"] == plan.run_id
    assert req["labels"]["dev.trainpod.run-id"] == plan.run_id
    assert req["user"] == "1000:1000"
    if hw.device == "cuda":
        assert req["ipc_mode"] == "host"
        assert req["device_requests"] == [{"count": hw.gpu_count, "capabilities": [["gpu"]]}]
        assert f"--gpus {hw.gpu_count}" in plan.provider_request["docker_run"]
        assert plan.env["TORCH_CUDA_ARCH_LIST"] == hw.cuda_arch_list
        for key, value in hw.env.items():  # e.g. NCCL_P2P_DISABLE for consumer cards
            assert plan.env[key] == value
    else:
        assert req["shm_size"] == "2g" and "device_requests" not in req
    by_target = {m.target: m for m in plan.mounts}
    assert by_target["/data"].source == "/srv/datasets/sample" and by_target["/data"].read_only
    assert by_target["/cache/huggingface"].source == "/home/user/.local/state/trainpod/hf-cache"
    inner = RunSpec.from_json(plan.env["TRAINPOD_RUN_SPEC"])
    assert inner.config == plan.spec.config and inner.image == IMAGE
    if hw.nnodes > 1:  # every node writes to the shared S3 output: nothing of the host is mounted for it
        assert "/output" not in by_target and inner.storage.output == plan.spec.storage.output == "s3://bucket/runs/smoke"
    else:
        assert by_target["/output"].source == "/srv/runs/smoke" and not by_target["/output"].read_only
        # the spec inside the container sees the mount targets; the plan keeps the host view
        assert (inner.storage.dataset, inner.storage.output) == ("/data", "/output")
        assert plan.spec.storage.output == "/srv/runs/smoke"
    # one process per device: torchrun for multi-GPU / multi-process profiles
    if hw.procs_per_node > 1:
        assert f"--nproc-per-node={hw.procs_per_node}" in req["command"]
    else:
        assert req["command"] == ["python", "-m", "trainpod_trainer"]


def test_secrets_by_name_only(make_spec) -> None:
    canary = "canary-Secret-7f3a9c"
    settings = _settings(aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key=canary, hf_token=canary + "hf",
                         registry_password=canary + "reg", s3_endpoint_url="http://127.0.0.1:9000")
    plan = _plan(make_spec, "cpu", settings)
    dumped = json.dumps(plan.display()) + plan.model_dump_json()
    assert canary not in dumped
    assert plan.secret_env == ["AWS_SECRET_ACCESS_KEY", "HF_TOKEN"]  # the registry password stays outside
    assert plan.display()["env"]["AWS_SECRET_ACCESS_KEY"] == "***"
    line = plan.provider_request["docker_run"]
    assert " -e AWS_SECRET_ACCESS_KEY " in line and " -e HF_TOKEN " in line and canary not in line
    assert plan.env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000" and plan.env["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE"


def test_root_launcher_runs_as_image_user(make_spec) -> None:
    plan = _plan(make_spec, "cpu", uid=0)
    assert "user" not in plan.provider_request["container"]
    assert "--user" not in plan.provider_request["docker_run"]
    assert any("chowned" in n for n in plan.notes)


def test_docker_run_line_round_trips(make_spec) -> None:
    plan = _plan(make_spec, "cloud-rtx-4090")
    argv = shlex.split(plan.provider_request["docker_run"])
    assert argv[:3] == ["docker", "run", "--detach"]
    assert argv[-4:] == [IMAGE, "python", "-m", "trainpod_trainer"]
    env_args = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    spec_arg = next(a for a in env_args if a.startswith("TRAINPOD_RUN_SPEC="))
    assert RunSpec.from_json(spec_arg.split("=", 1)[1]).run_id == plan.run_id


def test_mac_mps_refused_with_reason(make_spec) -> None:
    spec = make_spec("smoke", "mac-mps")
    with pytest.raises(UnsupportedError, match=r"mac-mps.*not reachable from Docker; use --remote local"):
        get_backend("docker").plan(spec, _settings())


def test_unsupported_hardware_refused_with_its_reason(make_spec) -> None:
    # windows-rtx-5060 is `supported = false`: no RunSpec can even be made for it, so no plan either
    with pytest.raises(ConfigError, match="sm_120"):
        make_spec("smoke", "windows-rtx-5060")


def test_every_profile_is_covered() -> None:
    catalog = load_catalog(use_cwd=False)
    runnable = {h for h in HARDWARE if _runnable(h)}
    refused = {h for h in HARDWARE if not _runnable(h)}
    assert runnable | refused == set(catalog.table("hardware"))
    assert {p.stem for p in SNAPSHOTS.glob("*.json")} == runnable, "stale or missing snapshot files"


def test_plan_without_image_uses_content_addressed_tag(make_spec) -> None:
    spec = make_spec("smoke", "cpu", dataset="/srv/datasets/sample", output="/srv/runs/smoke")
    plan = DockerBackend(uid=1000, gid=1000, cpus=8).plan(spec, _settings(registry="127.0.0.1:5055"))
    assert plan.image is not None and plan.image.startswith("127.0.0.1:5055/trainpod:cpu-")
    assert len(plan.image.rsplit("-", 1)[1]) == 12


def test_planning_imports_no_docker_sdk() -> None:
    """``launch --remote docker --dry-run`` and ``build --dry-run`` must not load the docker SDK (or torch)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from trainpod.backends import get_backend\n"
        "from trainpod.config.loader import load_catalog\n"
        "from trainpod.settings import Settings\n"
        "from trainpod.spec import RunSpec, StorageURIs\n"
        "from trainpod import images\n"
        "cat = load_catalog(use_cwd=False)\n"
        "cfg = cat.resolve('smoke')\n"
        "spec = RunSpec(run_id='smoke-x-1', created='2026-01-01T00:00:00+00:00', remote='docker', config=cfg,\n"
        "               storage=StorageURIs(dataset='/d', output='/o'))\n"
        "get_backend('docker').plan(spec, Settings(state_dir='/s')).display()\n"
        "images.image_plan('cloud-rtx-4090', cat.get('hardware', 'cloud-rtx-4090'), Settings())\n"
        "print(sorted(m for m in ('docker', 'torch', 'transformers', 'boto3') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_image_lock_covers_pyproject() -> None:
    """Every requirement of trainpod + the image extras is pinned in images/requirements.lock (torch aside)."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from trainpod import images

    project = tomllib.loads((images.REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in images.IMAGE_EXTRAS:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    lock = images.LOCK_FILE.read_text()
    pins = dict(line.split("==", 1) for line in lock.splitlines() if line and not line.startswith("#"))
    pins = {canonicalize_name(k): v for k, v in pins.items()}
    env = {"python_version": "3.11", "sys_platform": "linux"}
    missing = [str(r) for r in wanted if (not r.marker or r.marker.evaluate(env))
               and canonicalize_name(r.name) not in {"torch", "trainpod"}
               and (canonicalize_name(r.name) not in pins or pins[canonicalize_name(r.name)] not in r.specifier)]
    assert not missing, f"images/requirements.lock is stale for {missing}: run `python -m trainpod.images lock`"
    assert images.torch_version(lock)
