"""trainpod.credentials, the pure half: the session policy document, its duration, and what the plan says the pod
receives (names and scopes, never values). The minting half runs against STS on loopback moto in
tests/integration/test_scoped_credentials.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainpod import credentials
from trainpod.backends.runpod import RunPodBackend
from trainpod.config.loader import load_catalog
from trainpod.settings import Settings
from trainpod.spec import LaunchShape, RunSpec, StorageURIs

IMAGE = "ghcr.io/acme/trainpod:cuda-0123456789ab"
RUN_ID = "oracle-run-20260101-000000-abc123"
OUT = f"s3://bkt/trainpod/runs/{RUN_ID}"


def _spec(preset: str = "oracle-rauru-cloud", *, dataset: str = "s3://bkt/datasets/oracle",
          init_from: str | None = None, **overrides) -> RunSpec:
    cfg = load_catalog(use_cwd=False).resolve(preset, overrides)
    return RunSpec(run_id=RUN_ID, created="2026-01-01T00:00:00+00:00", git_commit="0" * 40, remote="runpod",
                   config=cfg, image=IMAGE, storage=StorageURIs(dataset=dataset, output=OUT),
                   launch=LaunchShape(), init_from=init_from)


def _settings(**kw) -> Settings:
    base = {"storage_uri": "s3://bkt/trainpod", "aws_access_key_id": "AKIAUSERKEY000000001",
            "aws_secret_access_key": "user-long-lived-secret-canary-000"}
    return Settings(**{**base, **kw})


def test_session_policy_is_exactly_the_runs_prefixes():
    policy = credentials.session_policy(credentials.run_scope(_spec(init_from="s3://other/stage1/")))
    assert policy == {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadDataset", "Effect": "Allow", "Action": ["s3:GetObject"],
             "Resource": ["arn:aws:s3:::bkt/datasets/oracle/*", "arn:aws:s3:::other/stage1/*"]},
            {"Sid": "ReadWriteRunOutput", "Effect": "Allow",
             "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                        "s3:ListMultipartUploadParts"],
             "Resource": [f"arn:aws:s3:::bkt/trainpod/runs/{RUN_ID}/*"]},
            {"Sid": "ListRunPrefixes0", "Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": ["arn:aws:s3:::bkt"],
             "Condition": {"StringLike": {"s3:prefix": ["datasets/oracle", "datasets/oracle/", "datasets/oracle/*",
                                                        f"trainpod/runs/{RUN_ID}", f"trainpod/runs/{RUN_ID}/",
                                                        f"trainpod/runs/{RUN_ID}/*"]}}},
            {"Sid": "ListRunPrefixes1", "Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": ["arn:aws:s3:::other"],
             "Condition": {"StringLike": {"s3:prefix": ["stage1", "stage1/", "stage1/*"]}}},
        ],
    }
    text = json.dumps(policy)
    # nothing broader: no bucket-wide object ARN, no wildcard action, no Deny needed, no sibling-matching prefix
    assert '"s3:*"' not in text and "arn:aws:s3:::bkt/*" not in text and "arn:aws:s3:::*" not in text
    assert f"runs/{RUN_ID}*" not in text  # would also match runs/<run id>-other/
    assert len(json.dumps(policy, separators=(",", ":"))) < 2048  # STS's session policy size limit


def test_a_local_dataset_gets_no_read_statement():
    scope = credentials.run_scope(_spec(dataset="/data/local"))
    assert scope.reads == () and scope.writes == (OUT,)
    sids = [s["Sid"] for s in credentials.session_policy(scope)["Statement"]]
    assert sids == ["ReadWriteRunOutput", "ListRunPrefixes0"]


@pytest.mark.parametrize(("runtime", "kw", "expected"), [
    (10, {}, 10 * 60 + 60 + 600),  # runtime + stop grace + start-up allowance
    (1, {}, 900),  # STS's floor
    (240, {}, 240 * 60 + 60 + 600),
    (2000, {"sts_role_arn": "arn:aws:iam::1:role/r"}, 12 * 3600),  # AssumeRole's ceiling
    (2000, {}, 2000 * 60 + 660),  # GetFederationToken allows up to 36 h
    (240, {"sts_max_session_seconds": 3600}, 3600),
])
def test_session_length_is_runtime_plus_grace_capped_by_sts(runtime, kw, expected):
    spec = _spec(max_runtime_minutes=runtime)
    assert credentials.session_seconds(spec, _settings(**kw)) == expected


def test_plan_lists_what_the_pod_receives_by_name_and_scope_never_values():
    settings = _settings(hf_token="hf_canary_token_value_0001", sts_role_arn="arn:aws:iam::123:role/pod")
    plan = RunPodBackend().plan(_spec(), settings)
    creds = {c["name"]: c for c in plan.credentials}
    assert list(creds) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                           "TRAINPOD_CREDENTIALS_EXPIRE_AT"]  # no HF_TOKEN: the base model is not gated
    assert "AssumeRole arn:aws:iam::123:role/pod" in creds["AWS_SESSION_TOKEN"]["scope"]
    assert f"read/write/delete {OUT}/" in creds["AWS_SESSION_TOKEN"]["scope"]
    assert "read s3://bkt/datasets/oracle/" in creds["AWS_SESSION_TOKEN"]["scope"]
    assert creds["AWS_SESSION_TOKEN"]["expires"].startswith(f"{240 * 60 + 660} s")
    shown = json.dumps(plan.display())
    for value in ("AKIAUSERKEY000000001", "user-long-lived-secret-canary-000", "hf_canary_token_value_0001"):
        assert value not in shown
    assert "HF_TOKEN" not in plan.secret_env and not any(n.startswith("WARNING") for n in plan.notes)


def test_hf_token_goes_only_to_a_gated_base_model():
    settings = _settings(hf_token="hf_canary_token_value_0001")
    spec = _spec()
    gated = spec.model_copy(update={"config": spec.config.model_copy(update={
        "expert": spec.config.expert.model_copy(update={"gated": True})})})
    plan = RunPodBackend().plan(gated, settings)
    (hf,) = [c for c in plan.credentials if c["name"] == "HF_TOKEN"]
    assert "gated" in hf["scope"] and spec.config.expert.base_model in hf["scope"]
    assert "HF_TOKEN" in plan.secret_env and plan.display()["env"]["HF_TOKEN"] == "***"
    assert "HF_TOKEN" not in RunPodBackend().plan(spec, settings).secret_env


def test_long_lived_opt_in_and_push_credentials_are_warned_about_in_the_plan():
    settings = _settings(allow_long_lived_credentials=True, registry_username="ci",
                         registry_password="push-password-canary-01")
    plan = RunPodBackend().plan(_spec(), settings)
    warnings = [n for n in plan.notes if n.startswith("WARNING")]
    assert any("AWS_SECRET_ACCESS_KEY" in w and "long-lived" in w for w in warnings), warnings
    assert any("push credentials of ci" in w and "TRAINPOD_REGISTRY_PULL_USERNAME" in w for w in warnings)
    assert plan.secret_env == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]  # no session: nothing expires
    pull = RunPodBackend().plan(_spec(), _settings(registry_username="ci", registry_password="push-password-canary-01",
                                                   registry_pull_username="ci-pull",
                                                   registry_pull_password="pull-token-canary-01"))
    (reg,) = [c for c in pull.credentials if c["kind"] == "registry"]
    assert reg["scope"].startswith("pull-only token of ci-pull") and not any(n.startswith("WARNING") for n in pull.notes)


def test_pod_stops_before_its_session_expires():
    environ = {credentials.EXPIRES_ENV: "10000"}
    seconds, reason = credentials.stop_before_expiry(environ, 60, now=1000)
    assert seconds == 10000 - 1000 - 60 - credentials.EXPIRY_MARGIN_SECONDS
    assert credentials.EXPIRY_REASON in reason and "1970-01-01T02:46:40Z" in reason
    assert credentials.stop_before_expiry({}, 60, now=1000) is None
    assert credentials.stop_before_expiry(environ, 60, now=9990) == (0.0, reason)


def test_dry_run_prints_the_credentials_line_without_values(monkeypatch):
    """`launch --dry-run` names each credential the pod gets, with its scope; boto3 is not imported for it."""
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", "s3://bkt/trainpod")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUSERKEY000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "user-long-lived-secret-canary-000")
    monkeypatch.setenv("TRAINPOD_REGISTRY", "registry.example:5000")
    res = subprocess.run([sys.executable, "-m", "trainpod", "launch", "oracle-rauru-cloud", "--remote", "runpod",
                          "--dry-run"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert ("  pod receives  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN: STS GetFederationToken, "
            "session policy: read s3://trainpod-datasets/rauru-asm/v1/, read/write/delete s3://bkt/trainpod/runs/"
            ) in res.stdout, res.stdout  # a row of the plan summary
    assert "list only those prefixes (expires 15060 s after it is minted at submit)" in res.stdout
    assert "user-long-lived-secret-canary-000" not in res.stdout + res.stderr
    plan = subprocess.run([sys.executable, "-m", "trainpod", "launch", "oracle-rauru-cloud", "--remote", "runpod",
                           "--json"], capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    names = [c["name"] for c in json.loads(plan.stdout)["credentials"]]  # plain data in the plan JSON
    assert names[:3] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    assert "user-long-lived-secret-canary-000" not in plan.stdout + plan.stderr
    opt_in = subprocess.run([sys.executable, "-m", "trainpod", "launch", "oracle-rauru-cloud", "--remote", "runpod",
                             "--dry-run", "--allow-long-lived-credentials"], capture_output=True, text=True,
                            timeout=120)
    assert opt_in.returncode == 0, opt_in.stderr
    assert "  pod receives  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: your own long-lived AWS credentials" \
        in opt_in.stdout, opt_in.stdout
    assert "  ! AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: your own long-lived AWS credentials" in opt_in.stdout
    assert "user-long-lived-secret-canary-000" not in opt_in.stdout + opt_in.stderr


def test_a_custom_jobs_session_covers_its_data_and_its_mirror(tmp_path, monkeypatch, repo_root):
    """A [jobs.NAME] run on RunPod: read its ``data`` (and a pipeline's previous output), write its S3 mirror."""
    from trainpod import launcher

    monkeypatch.setenv("TRAINPOD_STORAGE_URI", "s3://team-bucket/trainpod")
    monkeypatch.setenv("TRAINPOD_REGISTRY", "registry.example.com/team")
    cfg = tmp_path / "training.toml"
    cfg.write_text(f'[jobs.gpu]\nhardware = "cloud-rtx-4090"\nproject_dir = "{repo_root / "examples" / "byo-train"}"\n'
                   'command = ["python", "train.py"]\ndata = "s3://team-bucket/datasets/xy"\n')
    prep = launcher.prepare(launcher.LaunchRequest(preset="gpu", config=str(cfg), remote="runpod",
                                                   max_runtime_minutes=90,
                                                   extra={"previous_output": "s3://team-bucket/trainpod/runs/stage1"}))
    scope = credentials.run_scope(prep.spec)
    assert scope.reads == ("s3://team-bucket/datasets/xy", "s3://team-bucket/trainpod/runs/stage1")
    assert scope.writes == (prep.spec.workload.sync_uri,)
    assert prep.plan.secret_env[:3] == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    (session,) = {c["scope"] for c in prep.plan.credentials if c["kind"] == "sts-session"}
    assert f"read/write/delete {prep.spec.workload.sync_uri}/" in session and "read s3://team-bucket/datasets/xy/" in session


def test_sts_endpoint_follows_an_s3_compatible_endpoint_but_not_an_aws_one():
    assert credentials.sts_endpoint(_settings(s3_endpoint_url="http://127.0.0.1:9000")) == "http://127.0.0.1:9000"
    assert credentials.sts_endpoint(_settings(s3_endpoint_url="https://s3.eu-west-1.amazonaws.com")) is None
    assert credentials.sts_endpoint(_settings()) is None
    assert credentials.sts_endpoint(_settings(s3_endpoint_url="http://127.0.0.1:9000",
                                              sts_endpoint_url="http://127.0.0.1:9001")) == "http://127.0.0.1:9001"


def test_session_name_is_valid_for_sts_and_keeps_the_runs_unique_end():
    name = credentials.session_name("oracle-rauru-cloud-20261128-165821-59db31")
    assert name == "tp--cloud-20261128-165821-59db31" and len(name) == 32  # GetFederationToken's Name: 2..32
    assert credentials.session_name("a/b c") == "tp-a-b-c"
