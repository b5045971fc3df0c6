"""RunPodBackend.plan: pure, refuses before money is spent, and shows exactly what it would rent.

The dry-run snapshots pin what matters for the two shipped RunPod presets: GPU type ids and
fallbacks, cloud type, the CUDA floor, disk, the cost estimate with its price source, secrets by name
only, and the REST v2 body (validated against RunPod's OpenAPI ``CreatePodRequest``) or, for spot, the
legacy GraphQL document.
"""

from __future__ import annotations

import json

import pytest
from graphql import parse

from tests.contract.openapi import Contract
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
    assert req["api"] == "rest-v2" and req["endpoint"] == "POST /v2/pods" and req["schema"] == "CreatePodRequest"
    assert req["attempts"] == [
        {"gpu_type_id": "NVIDIA GeForce RTX 4090", "cloud_type": "COMMUNITY"},
        {"gpu_type_id": "NVIDIA RTX A6000", "cloud_type": "COMMUNITY"},
    ]
    assert req["cuda_floor"] == "13.0" and req["min_cuda_version"] == "13.0"
    assert req["price_per_gpu_hour"] == 0.69 and req["price_source"].startswith("profile price_per_gpu_hour")
    assert req["expected_hours"] == 4.0
    assert plan.estimated_cost_usd == 2.76  # $0.69 x 1 GPU x 240 min
    assert plan.gpus == 1 and plan.image == IMAGE
    assert plan.command == ["python", "-m", "trainpod.pod.supervisor", "--", "python", "-m", "trainpod_trainer"]
    # secrets by name only, everywhere the plan is shown
    # S3: a run-scoped STS session minted at submit (trainpod.credentials), never the user's key id or secret
    assert plan.secret_env == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                               "TRAINPOD_CREDENTIALS_EXPIRE_AT"]
    shown = json.dumps(plan.display())
    assert secret not in shown and secret not in plan.model_dump_json()
    assert plan.display()["env"]["AWS_SECRET_ACCESS_KEY"] == "***"
    assert plan.env["AWS_REGION"] == "eu-west-1" and "AWS_ACCESS_KEY_ID" not in plan.env
    assert "AKIAEXAMPLE" not in json.dumps(plan.display())
    assert "RUNPOD_API_KEY" not in plan.env and "RUNPOD_API_KEY" not in plan.secret_env
    assert RunSpec.from_json(plan.env["TRAINPOD_RUN_SPEC"]) == plan.spec
    # the v2 body it would send: RunPod's CreatePodRequest (validated against the vendored OpenAPI document)
    body = req["body"]
    assert Contract().errors("CreatePodRequest", body) == []
    assert body == {
        "name": f"trainpod-{RUN_ID}-a0", "image": IMAGE, "cloud": "COMMUNITY",
        "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1, "minCudaVersion": "13.0"}, "disk": 40,
        "env": {**plan.env, **{n: "***" for n in plan.secret_env}},
        "args": "python -m trainpod.pod.supervisor -- python -m trainpod_trainer",
    }
    assert "allowedCudaVersions" not in json.dumps(req)


def test_the_dry_run_body_fails_the_contract_when_it_is_wrong():
    """The contract check above can fail: a GraphQL-era field or a bare-major CUDA floor is refused."""
    body = RunPodBackend().plan(_spec("oracle-rauru-cloud"), _settings()).provider_request["body"]
    assert Contract().errors("CreatePodRequest", {**body, "terminateAfter": "2027-01-01T00:00:00Z"})
    assert Contract().errors("CreatePodRequest", {**body, "gpu": {**body["gpu"], "minCudaVersion": "12"}})
    assert Contract().errors("CreatePodRequest", {**body, "cloud": "ALL"})


def test_cloud_all_becomes_one_v2_attempt_per_cloud():
    plan = RunPodBackend().plan(_spec("oracle-rauru-cloud"), _settings(runpod_cloud_type="ALL"))
    assert plan.provider_request["attempts"][:2] == [
        {"gpu_type_id": "NVIDIA GeForce RTX 4090", "cloud_type": "COMMUNITY"},
        {"gpu_type_id": "NVIDIA GeForce RTX 4090", "cloud_type": "SECURE"},
    ]
    assert Contract().errors("CreatePodRequest", plan.provider_request["body"]) == []


def test_dry_run_snapshot_oracle_rauru_a100():
    plan = RunPodBackend().plan(_spec("oracle-rauru-a100"), _settings())
    req = plan.provider_request
    assert req["attempts"] == [
        {"gpu_type_id": "NVIDIA A100 80GB PCIe", "cloud_type": "SECURE"},
        {"gpu_type_id": "NVIDIA A100-SXM4-80GB", "cloud_type": "SECURE"},
    ]
    assert req["cuda_floor"] == "13.0" and req["body"]["gpu"]["minCudaVersion"] == "13.0"
    assert plan.estimated_cost_usd == 7.16  # $1.79 x 1 x 4 h, under max_cost_usd 12
    assert req["body"]["disk"] == 60
    assert plan.secret_env == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                               "TRAINPOD_CREDENTIALS_EXPIRE_AT"]


def test_settings_cloud_type_overrides_profile_and_is_validated():
    plan = RunPodBackend().plan(_spec("oracle-rauru-a100"), _settings(runpod_cloud_type="community"))
    assert plan.provider_request["cloud_type"] == "COMMUNITY"
    with pytest.raises(ConfigError, match="did you mean 'SECURE'"):
        RunPodBackend().plan(_spec("oracle-rauru-a100"), _settings(runpod_cloud_type="SECUR"))


def test_spot_bids_the_on_demand_price_and_uses_interruptable_on_the_legacy_graphql_path():
    plan = RunPodBackend().plan(_spec("oracle-rauru-cloud", spot=True), _settings())
    req = plan.provider_request
    assert req["api"] == "graphql" and req["mutation"] == "podRentInterruptable"
    assert "legacy" in req["legacy"] and "early 2027" in req["legacy"]
    assert any("legacy" in n and "2027" in n for n in plan.notes)
    assert req["bid_per_gpu"] == 0.69 and "bidPerGpu: 0.69" in req["graphql"]
    assert req["allowed_cuda_versions"] == ["13.0"]
    parse(req["graphql"])


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
    """The exact list is for the legacy GraphQL (spot) path; it now reaches the 13.x hosts report."""
    assert allowed_cuda_versions("12.8") == ["12.8", "12.9", "13.0"]
    assert allowed_cuda_versions("11.8")[0] == "11.8" and len(allowed_cuda_versions("11.8")) == 12
    assert allowed_cuda_versions("13.1") == []


def test_on_demand_cuda_floor_is_open_ended_for_13x_hosts():
    """v2 takes gpu.minCudaVersion: a CUDA 13.1 image plans fine on-demand (hosts report 13.x), where the old
    exact list refused it."""
    from trainpod.config.loader import load_catalog as catalog

    cfg = catalog(use_cwd=False).resolve("oracle-rauru-cloud", {})
    hw = cfg.hardware.model_copy(update={"cuda_version": "13.1"})
    spec = _spec("oracle-rauru-cloud").model_copy(update={"config": cfg.model_copy(update={"hardware": hw})})
    plan = RunPodBackend().plan(spec, _settings())
    assert plan.provider_request["body"]["gpu"]["minCudaVersion"] == "13.1"


def test_shipped_hardware_names_only_gpu_types_runpod_offers():
    """cloud-a100-40gb named "NVIDIA A100-SXM4-40GB", which RunPod no longer offers (shared/runpod/README.md)."""
    from tests.fakes.runpod_api import DEFAULT_GPU_TYPES

    offered = {g["id"] for g in DEFAULT_GPU_TYPES} | {"NVIDIA H100 80GB HBM3"}
    cat = load_catalog(use_cwd=False)
    for name, hw in cat.hardware.items():
        for gpu in filter(None, [hw.runpod_gpu_type_id, *hw.runpod_fallback_gpu_type_ids]):
            assert gpu in offered, f"hardware {name}: {gpu!r} is not a GPU type RunPod offers"
    assert cat.hardware["cloud-a100-40gb"].runpod_gpu_type_id == "NVIDIA A100 80GB PCIe"


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

    code = ("import sys; from trainpod.backends.runpod import RunPodBackend; import trainpod.pod.supervisor; "
            "print(sorted(m for m in ('runpod', 'requests', 'boto3', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
