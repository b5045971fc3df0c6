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
    ((auth_id, auth),) = fake_runpod.registry_auths.items()
    assert (auth["username"], auth["password"]) == ("ci-pull", PULL)
    assert PUSH not in json.dumps(fake_runpod.registry_auths) and PUSH not in json.dumps(pod.env)
    # the pod pulls with it: REST v2's ``registry`` (GraphQL: ``containerRegistryAuthId``)
    assert auth_id in (pod.request.get("registry"), pod.request.get("containerRegistryAuthId"))


def test_a_role_that_allows_less_than_the_run_needs_gets_its_one_hour_default(monkeypatch):
    """Real STS refuses a DurationSeconds above the role's MaxSessionDuration (1 h unless raised): trainpod asks once
    more at 1 h, and the pod then stops before that expiry and is renewed (tests/integration/test_credential_renewal).
    A loopback STS answers like AWS: ValidationError for more than 3600 s, credentials otherwise."""
    import threading
    import time
    import urllib.parse
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from trainpod import credentials

    asked: list[int] = []

    class RoleSTS(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            seconds = int(form["DurationSeconds"][0])
            asked.append(seconds)
            if seconds > 3600:
                status, body = 400, ("<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code><Message>"
                                     "The requested DurationSeconds exceeds the MaxSessionDuration set for this role."
                                     "</Message></Error><RequestId>1</RequestId></ErrorResponse>")
            else:
                expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))
                status, body = 200, (
                    '<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult>'
                    "<Credentials><AccessKeyId>ASIALOOPBACK00000001</AccessKeyId><SecretAccessKey>session-secret"
                    f"</SecretAccessKey><SessionToken>session-token</SessionToken><Expiration>{expires}</Expiration>"
                    "</Credentials><AssumedRoleUser><AssumedRoleId>AROA1:tp</AssumedRoleId><Arn>arn:aws:sts::1:"
                    "assumed-role/r/tp</Arn></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>1"
                    "</RequestId></ResponseMetadata></AssumeRoleResponse>")
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), RoleSTS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud", {})  # max_runtime 240 min
        spec = RunSpec(run_id="role-cap-20260101-000000-abc123", created="2026-01-01T00:00:00+00:00",
                       remote="runpod", config=cfg, storage=StorageURIs(dataset="s3://b/datasets/x",
                                                                       output="s3://b/runs/role-cap"))
        settings = load_settings(sts_endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
                                 sts_role_arn="arn:aws:iam::1:role/r", aws_access_key_id="AKIAUSER0000000001",
                                 aws_secret_access_key="user-secret-0001", aws_region="us-east-1")
        session = credentials.mint(spec, settings)
    finally:
        server.shutdown()
    assert asked == [240 * 60 + 60 + 600, 3600]
    assert session.seconds == 3600 and session.env()["AWS_ACCESS_KEY_ID"] == "ASIALOOPBACK00000001"
    assert 3500 < session.expiration - time.time() <= 3600
