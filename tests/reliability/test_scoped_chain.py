"""The RunPod pod chain with run-scoped credentials on an S3 that checks them: CLI -> fake RunPod API -> a real
container -> podside -> trainer -> the IAM-enforcing moto (tests/fixtures/sts.py) -> outputs downloaded.

The CLI holds the user's long-lived keys (IAM user alice); each pod gets only an AssumeRole session whose policy
moto evaluates (the fixture installs the session policy trainpod sent as the role's policy). A spot preemption after
the first checkpoint makes the CLI mint a second session for the relaunched pod, which resumes to DONE. Then the
user's secret key is looked for in every pod env, the CLI output, the run registry, the run's S3 objects, the
registry auth stored at RunPod and the image's config.
"""

from __future__ import annotations

import json

import pytest

from tests.fixtures.runpod import launch_and_preempt, pod_chain
from tests.integration.test_runpod_chain import OVERLAY, STEPS

pytestmark = [pytest.mark.chaos, pytest.mark.runpod, pytest.mark.docker, pytest.mark.s3, pytest.mark.train]


@pytest.fixture
def scoped_chain(tmp_path, sts_s3, fake_runpod, docker_env, cpu_image, monkeypatch):
    from trainpod import storage
    from trainpod.config.loader import load_catalog

    dataset = sts_s3.uri("datasets/sample")
    storage.sync_up(load_catalog(use_cwd=False).datasets["sample"].path, dataset)
    yield from pod_chain(monkeypatch, tmp_path, sts_s3, fake_runpod, docker_env,
                         OVERLAY.format(steps=STEPS, dataset=dataset))


def test_pod_chain_trains_checkpoints_resumes_and_finishes_with_scoped_sessions(scoped_chain, sts_s3, tmp_path,
                                                                                docker_env, chaos_record):
    user_key, user_secret = sts_s3.user
    rc, out, err = launch_and_preempt(scoped_chain, sts_s3, ["launch", "smoke-pod", "--remote", "runpod", "--yes", "--spot",
                                                             "--max-runtime", "10"],
                                      "checkpoints/step-00000002/manifest.json")
    pods = list(scoped_chain.pods.values())
    chaos_record("RunPod chain with scoped sessions (IAM-enforcing moto): train, preempt, resume, DONE", 1,
                 int(rc == 0 and len(pods) == 2), f"exit {rc}; {len(pods)} pods, {len(sts_s3.proxy.policies)} "
                 f"sessions minted; {sts_s3.proxy.denied_missing} AWS-style 403s for missing keys read as absent")
    assert rc == 0, out + err
    assert "preempted: relaunching" in out
    first, second = pods
    assert (second.status, second.terminated_by) == ("TERMINATED", "pod")
    for pod in (first, second):  # a session each: an ASIA key, a token, an expiry; never the user's keys
        assert pod.env["AWS_ACCESS_KEY_ID"].startswith("ASIA") and pod.env["AWS_SESSION_TOKEN"]
        assert float(pod.env["TRAINPOD_CREDENTIALS_EXPIRE_AT"]) > 0
    assert first.env["AWS_SESSION_TOKEN"] != second.env["AWS_SESSION_TOKEN"]
    assert len(sts_s3.proxy.policies) == 2  # one AssumeRole per pod, both with the run's session policy
    run_prefix = next(k["Key"] for k in sts_s3.client().list_objects_v2(Bucket=sts_s3.bucket, Prefix="trainpod/runs/")
                      ["Contents"] if k["Key"].endswith("/DONE")).rpartition("/")[0]
    log = sts_s3.client().get_object(Bucket=sts_s3.bucket, Key=f"{run_prefix}/logs/train.log")["Body"].read().decode()
    assert "fetched checkpoint step-0000000" in log and "resumed from" in log
    meta = json.loads(sts_s3.client().get_object(Bucket=sts_s3.bucket, Key=f"{run_prefix}/metadata.json")
                      ["Body"].read())
    assert meta["training"]["steps"] == STEPS
    statement_resources = {r for st in sts_s3.proxy.policies[0]["Statement"] for r in st["Resource"]}
    assert f"arn:aws:s3:::{sts_s3.bucket}/{run_prefix}/*" in statement_resources

    # canary scan: the user's long-lived secret (and key id) nowhere a pod, a log or a record could carry it
    places: dict[str, bytes] = {"cli output": (out + err).encode()}
    for pod in scoped_chain.pods.values():
        places[f"pod env {pod.id}"] = json.dumps(pod.env).encode()
    places["registry auths at RunPod"] = json.dumps(scoped_chain.registry_auths).encode()
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes()
    pages = sts_s3.client().get_paginator("list_objects_v2").paginate(Bucket=sts_s3.bucket, Prefix=run_prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            places[obj["Key"]] = sts_s3.client().get_object(Bucket=sts_s3.bucket, Key=obj["Key"])["Body"].read()
    image = docker_env.client().images.get(first.image)
    places["image config"] = json.dumps(image.attrs).encode()
    hits = [where for where, data in places.items() if user_secret.encode() in data or user_key.encode() in data]
    chaos_record("canary: the user's AWS key in pod envs / CLI output / run registry / S3 objects / registry "
                 "auth / image config", len(places), len(places) - len(hits),
                 f"{len(hits)} hits in {len(places)} places ({sum(map(len, places.values())) // 1024} KiB)")
    assert len(places) > 20 and hits == [], hits
