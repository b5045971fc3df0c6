"""What a rented pod actually receives besides its S3 session (loopback fake RunPod API, IAM-enforcing moto):
HF_TOKEN only for a gated base model, and the pull-only registry token (not the push login) stored at RunPod."""

from __future__ import annotations

import json

import pytest

from trainpod.backends.runpod import RunPodBackend
from trainpod.config.loader import load_catalog
from trainpod.settings import load_settings
from trainpod.spec import RunSpec, StorageURIs

pytestmark = [pytest.mark.runpod, pytest.mark.s3]

HF = "hf_canaryTokenForGatedModels0001"
PUSH = "push-password-canary-0001"
PULL = "pull-only-token-canary-0001"


def _submit(sts_s3, fake_runpod, *, gated: bool, run_id: str, **settings_kw):
    backend = RunPodBackend()
    backend.poll_s, backend.start_timeout_s = 0.05, 5.0
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud", {})
    cfg = cfg.model_copy(update={"expert": cfg.expert.model_copy(update={"gated": gated})})
    spec = RunSpec(run_id=run_id, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   image="registry.local/trainpod:cuda-0123456789ab",
                   storage=StorageURIs(dataset=sts_s3.uri("datasets/x"), output=sts_s3.uri(f"runs/{run_id}")))
    settings = load_settings(storage_uri=sts_s3.uri(), **settings_kw)
    plan = backend.plan(spec, settings)
    handle = backend.submit(plan, settings)
    return plan, fake_runpod.pods[handle.provider_id]


def test_hf_token_reaches_the_pod_only_for_a_gated_base_model(sts_s3, fake_runpod, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF)
    plan, pod = _submit(sts_s3, fake_runpod, gated=False, run_id="hf-open-20260101-000000-abc123")
    assert "HF_TOKEN" not in pod.env and HF not in json.dumps(pod.env)
    assert not any(c["name"] == "HF_TOKEN" for c in plan.credentials)
    plan, pod = _submit(sts_s3, fake_runpod, gated=True, run_id="hf-gated-20260101-000000-abc123")
    assert pod.env["HF_TOKEN"] == HF
    assert [c["name"] for c in plan.credentials if c["name"] == "HF_TOKEN"] == ["HF_TOKEN"]
    assert HF not in json.dumps(plan.display())


def test_runpod_stores_the_pull_only_registry_token_not_the_push_login(sts_s3, fake_runpod):
    _, pod = _submit(sts_s3, fake_runpod, gated=False, run_id="reg-pull-20260101-000000-abc123",
                     registry="registry.local", registry_username="ci-push", registry_password=PUSH,
                     registry_pull_username="ci-pull", registry_pull_password=PULL)
    (auth,) = fake_runpod.registry_auths.values()
    assert (auth["username"], auth["password"]) == ("ci-pull", PULL)
    assert PUSH not in json.dumps(fake_runpod.registry_auths) and PUSH not in json.dumps(pod.env)
    assert pod.request.get("containerRegistryAuthId")
