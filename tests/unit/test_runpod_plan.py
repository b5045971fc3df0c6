"""RunPodBackend.plan: pure, refuses before money is spent, and shows exactly what it would rent.

The dry-run snapshots pin what matters for the two shipped RunPod presets: GPU type ids and
fallbacks, cloud type, the CUDA floor and allowed versions, disk, the cost estimate with its price
source, secrets by name only, and the GraphQL document.
"""

from __future__ import annotations

import json

import pytest
from graphql import parse

from trainpod.backends.runpod import RunPodBackend, allowed_cuda_versions, expected_hours
from trainpod.config.loader import load_catalog
from trainpod.errors import ConfigError, UnsupportedError
from trainpod.settings import Settings
from trainpod.spec import LaunchShape, RunSpec, StorageURIs

IMAGE = "ghcr.io/acme/trainpod:cuda-0123456789ab"
RUN_ID = "oracle-run-20260101-000000-abc123"


def _spec(preset: str, *, image: str | None = IMAGE, output: str = "s3://bucket/trainpod/runs/x",
          nnodes: int = 1, **overrides) -> RunSpec:
    cfg = load_catalog(use_cwd=False).resolve(preset, overrides)
    return RunSpec(run_id=RUN_ID, created="2026-01-01T00:00:00+00:00", git_commit="0" * 40, remote="runpod",
                   config=cfg, image=image, storage=StorageURIs(dataset=cfg.dataset.path, output=output),
                   launch=LaunchShape(nnodes=nnodes), trainpod_version="0.1.0")


def _settings(**kw) -> Settings:
    return Settings(storage_uri="s3://bucket/trainpod", aws_region="eu-west-1", aws_access_key_id="AKIAEXAMPLE",
                    **kw)


def test_dry_run_snapshot_oracle_rauru_cloud():
    secret = "s3cr3t-value-never-in-a-plan"
    plan = RunPodBackend().plan(_spec("oracle-rauru-cloud"), _settings(aws_secret_access_key=secret))
    req = plan.provider_request
    assert req["mutation"] == "podFindAndDeployOnDemand"
    assert req["attempts"] == [
        {"gpu_type_id": "NVIDIA GeForce RTX 4090", "cloud_type": "COMMUNITY"},
        {"gpu_type_id": "NVIDIA RTX A6000", "cloud_type": "COMMUNITY"},
    ]
    assert req["cuda_floor"] == "12.8"
    assert req["allowed_cuda_versions"] == ["12.8", "12.9"]
    assert req["price_per_gpu_hour"] == 0.69 and req["price_source"].startswith("profile price_per_gpu_hour")
    assert req["expected_hours"] == 4.0
    assert plan.estimated_cost_usd == 2.76  # $0.69 x 1 GPU x 240 min
    assert plan.gpus == 1 and plan.image == IMAGE
    assert plan.command == ["python", "-m", "trainpod.podside", "--", "python", "-m", "trainpod_trainer"]
    inp = req["input"]
    assert inp["gpuTypeId"] == "NVIDIA GeForce RTX 4090" and inp["cloudType"] == "COMMUNITY"
    assert inp["containerDiskInGb"] == 40 and inp["volumeInGb"] == 0 and inp["startSsh"] is False
    assert inp["name"] == f"trainpod-{RUN_ID}-a0"
    assert inp["dockerArgs"] == "python -m trainpod.podside -- python -m trainpod_trainer"
    # secrets by name only, everywhere the plan is shown
    # S3: a run-scoped STS session minted at submit (trainpod.credentials), never the user's key id or secret
    assert plan.secret_env == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                               "TRAINPOD_CREDENTIALS_EXPIRE_AT"]
    shown = json.dumps(plan.display())
    assert secret not in shown and secret not in plan.model_dump_json()
    assert plan.display()["env"]["AWS_SECRET_ACCESS_KEY"] == "***"
    assert {"key": "AWS_SECRET_ACCESS_KEY", "value": "***"} in inp["env"]
    assert plan.env["AWS_REGION"] == "eu-west-1" and "AWS_ACCESS_KEY_ID" not in plan.env
    assert "AKIAEXAMPLE" not in json.dumps(plan.display())
    assert "RUNPOD_API_KEY" not in plan.env and "RUNPOD_API_KEY" not in plan.secret_env
    assert RunSpec.from_json(plan.env["TRAINPOD_RUN_SPEC"]) == plan.spec
    # the GraphQL it would send: one mutation, valid, redacted, with the spec env masked for the snapshot
    doc = req["graphql"]
    assert secret not in doc
    parse(doc)
    spec_literal = json.dumps(plan.env["TRAINPOD_RUN_SPEC"], ensure_ascii=False)
    assert doc.replace(spec_literal, "<SPEC>") == (
        'mutation { podFindAndDeployOnDemand(input: {name: "trainpod-' + RUN_ID + '-a0", '
        'imageName: "ghcr.io/acme/trainpod:cuda-0123456789ab", gpuTypeId: "NVIDIA GeForce RTX 4090", '
        'gpuCount: 1, cloudType: COMMUNITY, containerDiskInGb: 40, volumeInGb: 0, volumeMountPath: "/workspace", '
        'ports: "", dockerArgs: "python -m trainpod.podside -- python -m trainpod_trainer", startSsh: false, '
        'supportPublicIp: false, env: [{key: "TRAINPOD_RUN_SPEC", value: <SPEC>}, {key: "TRAINPOD_STOP_GRACE_SECONDS", value: "60"}, '
        '{key: "PYTHONUNBUFFERED", value: "1"}, {key: "AWS_REGION", value: "eu-west-1"}, '
        '{key: "AWS_ACCESS_KEY_ID", value: "***"}, {key: "AWS_SECRET_ACCESS_KEY", value: "***"}, '
        '{key: "AWS_SESSION_TOKEN", value: "***"}, {key: "TRAINPOD_CREDENTIALS_EXPIRE_AT", value: "***"}], '
        'allowedCudaVersions: ["12.8", "12.9"]}) '
        '{ id name desiredStatus imageName gpuCount costPerHr lastStatusChange runtime { uptimeInSeconds } } }'
    )


def test_dry_run_snapshot_oracle_rauru_a100():
    plan = RunPodBackend().plan(_spec("oracle-rauru-a100"), _settings())
    req = plan.provider_request
    assert req["attempts"] == [
        {"gpu_type_id": "NVIDIA A100 80GB PCIe", "cloud_type": "SECURE"},
        {"gpu_type_id": "NVIDIA A100-SXM4-80GB", "cloud_type": "SECURE"},
    ]
    assert req["cuda_floor"] == "12.8" and req["allowed_cuda_versions"][0] == "12.8"
    assert plan.estimated_cost_usd == 7.16  # $1.79 x 1 x 4 h, under max_cost_usd 12
    assert req["input"]["containerDiskInGb"] == 60
    assert plan.secret_env == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                               "TRAINPOD_CREDENTIALS_EXPIRE_AT"]


def test_settings_cloud_type_overrides_profile_and_is_validated():
    plan = RunPodBackend().plan(_spec("oracle-rauru-a100"), _settings(runpod_cloud_type="community"))
    assert plan.provider_request["cloud_type"] == "COMMUNITY"
    with pytest.raises(ConfigError, match="did you mean 'SECURE'"):
        RunPodBackend().plan(_spec("oracle-rauru-a100"), _settings(runpod_cloud_type="SECUR"))


def test_spot_bids_the_on_demand_price_and_uses_interruptable():
    plan = RunPodBackend().plan(_spec("oracle-rauru-cloud", spot=True), _settings())
    assert plan.provider_request["mutation"] == "podRentInterruptable"
    assert plan.provider_request["bid_per_gpu"] == 0.69 and "bidPerGpu: 0.69" in plan.provider_request["graphql"]


def test_max_cost_guard_refuses_before_money_is_spent():
    with pytest.raises(UnsupportedError, match=r"estimated cost \$2.76 exceeds max_cost_usd \$1.00") as info:
        RunPodBackend().plan(_spec("oracle-rauru-cloud", max_cost_usd=1.0), _settings())
    assert "--max-cost" in info.value.hint


def test_max_cost_alone_caps_the_duration():
    plan = RunPodBackend().plan(_spec("oracle-rauru-cloud", max_runtime_minutes=None, max_cost_usd=3.45), _settings())
    assert plan.estimated_cost_usd == 3.45
    assert any("watchdog stops after 5.00 h" in n for n in plan.notes)


def test_no_money_guard_is_refused():
    with pytest.raises(UnsupportedError, match="money guard"):
        RunPodBackend().plan(_spec("oracle-rauru-cloud", max_runtime_minutes=None, max_cost_usd=None), _settings())


@pytest.mark.parametrize(("kwargs", "preset", "match"), [
    ({"output": "/home/me/runs/x"}, "oracle-rauru-cloud", "must write to S3"),
    ({"image": None}, "oracle-rauru-cloud", "no image"),
    ({"nnodes": 2}, "oracle-rauru-cloud", "multi-node"),
    ({}, "oracle-rauru-cpu", "CPU-only"),
    ({}, "oracle-rauru-mac", "Apple MPS"),
])
def test_refusals_have_reasons_and_hints(kwargs, preset, match):
    with pytest.raises(UnsupportedError, match=match) as info:
        RunPodBackend().plan(_spec(preset, **kwargs), _settings())
    assert info.value.hint


def test_cuda_floor_selects_newer_host_versions_only():
    assert allowed_cuda_versions("12.8") == ["12.8", "12.9"]
    assert allowed_cuda_versions("11.8")[0] == "11.8" and len(allowed_cuda_versions("11.8")) == 11
    assert allowed_cuda_versions("13.1") == []


def test_duration_heuristic_from_steps_when_no_max_runtime():
    cfg = _spec("oracle-rauru-cloud", max_runtime_minutes=None, hyperparameters={"max_steps": 1000}).config
    hours, why = expected_hours(cfg)
    # 1000 steps x 8 x 4 x 2048 tokens x 4 x 1.5e9 FLOPs / (165e12 x 0.3) ≈ 2.2 h, + 10 min startup
    assert hours == pytest.approx(2.2 + 1 / 6, rel=0.05) and "heuristic" in why


def test_plan_is_pure_no_network(monkeypatch):
    monkeypatch.setenv("RUNPOD_API_BASE_URL", "http://127.0.0.1:9")  # nothing listens: a call would fail
    assert RunPodBackend().plan(_spec("oracle-rauru-cloud"), _settings()).estimated_cost_usd == 2.76


def test_planning_imports_no_provider_sdk():
    """`launch --dry-run` must stay fast: neither the runpod SDK nor requests/boto3 are imported."""
    import subprocess
    import sys

    code = ("import sys; from trainpod.backends.runpod import RunPodBackend; import trainpod.podside; "
            "print(sorted(m for m in ('runpod', 'requests', 'boto3', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
