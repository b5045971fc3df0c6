"""A pod's S3 credentials reach only its run: minted by STS on a moto server that enforces IAM, used by a separate
process that holds nothing else, and denied everywhere the session policy does not name.

Exactly what is enforced by whom (tests/fixtures/sts.py has the details):

* moto enforces: the SigV4 signature with the session's key + token, and the Action/Resource of the role's
  identity policy. The fixture's proxy installs the session policy trainpod sent to AssumeRole as that identity
  policy (moto ignores session policies itself), so moto evaluates trainpod's document for every request below.
* not enforced by moto, checked on the policy document instead (tests/unit/test_credentials.py): the ``s3:prefix``
  condition that keeps ListBucket to the run's prefixes (moto ignores Conditions for S3, so listing the bucket root
  is *not* denied here; the row says so), GetFederationToken sessions (moto rejects their fixed key), and expiry
  (emulated by the proxy: ``ExpiredToken`` after ``expire_after`` seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainpod import credentials, storage
from trainpod.config.loader import load_catalog
from trainpod.settings import load_settings
from trainpod.spec import RunSpec, StorageURIs

pytestmark = [pytest.mark.chaos, pytest.mark.s3]

RUN_ID = "scoped-run-20260101-000000-abc123"
PROBE = r"""
import json, os, sys
from trainpod import storage
from trainpod.errors import TrainpodError
bucket, run, other, dataset, work = sys.argv[1:6]
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "allowed"
    except TrainpodError as exc:
        results[name] = "denied" if "access denied" in exc.message else f"error: {exc.message}"
attempt("read dataset", lambda: storage.sync_down(dataset, work))
attempt("write run", lambda: storage.write_bytes(run + "/probe.txt", b"mine"))
attempt("read run", lambda: storage.read_bytes(run + "/probe.txt") == b"mine" or 1 / 0)
attempt("list run", lambda: storage.open_store(run).list())
attempt("missing key in run reads as absent", lambda: storage.exists(run + "/DONE") is False or 1 / 0)
attempt("delete in run", lambda: storage.delete(run + "/probe.txt"))
attempt("read other run", lambda: storage.read_bytes(other + "/adapter.safetensors"))
attempt("write other run", lambda: storage.write_bytes(other + "/evil.txt", b"x"))
attempt("write dataset", lambda: storage.write_bytes(dataset + "/train.jsonl", b"poisoned"))
import boto3  # one object per DELETE: moto checks a batch delete against the bucket only (tests/fixtures/sts.py)
from botocore.exceptions import ClientError
b, _, key = dataset.removeprefix("s3://").partition("/")
try:
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).delete_object(Bucket=b, Key=key + "/train.jsonl")
    results["delete dataset"] = "allowed"
except ClientError as exc:
    results["delete dataset"] = "denied" if exc.response["Error"]["Code"] == "AccessDenied" else str(exc)
attempt("list bucket root", lambda: storage.open_store(f"s3://{bucket}").list())
print(json.dumps(results))
"""
ALLOWED = ("read dataset", "write run", "read run", "list run", "missing key in run reads as absent", "delete in run")
DENIED = ("read other run", "write other run", "write dataset", "delete dataset")


def _spec(sts_s3) -> RunSpec:
    cfg = load_catalog(use_cwd=False).resolve("smoke", {"max_runtime_minutes": 30})
    return RunSpec(run_id=RUN_ID, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   storage=StorageURIs(dataset=sts_s3.uri("datasets/sample"),
                                       output=sts_s3.uri(f"trainpod/runs/{RUN_ID}")))


def _seed(sts_s3) -> None:
    storage.sync_up(load_catalog(use_cwd=False).datasets["sample"].path, sts_s3.uri("datasets/sample"))
    sts_s3.client().put_object(Bucket=sts_s3.bucket, Key="trainpod/runs/someone-else/adapter.safetensors",
                               Body=b"another run's weights")


def _pod_env(session_env: dict[str, str], sts_s3) -> dict[str, str]:
    """What a pod holds: the session and the endpoint; nothing of the user's."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRAINPOD_"))}
    return {**keep, **session_env, "AWS_ENDPOINT_URL": sts_s3.endpoint, "AWS_REGION": "us-east-1",
            "TRAINPOD_STATE_DIR": os.environ["TRAINPOD_STATE_DIR"]}


def test_minted_session_reads_its_dataset_writes_its_run_and_is_denied_elsewhere(sts_s3, tmp_path, chaos_record):
    """As a process that holds only the session (the same probe runs in a container below)."""
    _seed(sts_s3)
    settings = load_settings()
    session = credentials.mint(_spec(sts_s3), settings)
    env = session.env()
    assert session.api == "AssumeRole" and env["AWS_ACCESS_KEY_ID"].startswith("ASIA")
    assert env["AWS_SECRET_ACCESS_KEY"] != sts_s3.user[1] and env["AWS_SESSION_TOKEN"]
    assert session.seconds == 30 * 60 + 60 + 600 and session.expiration > time.time() + 30 * 60
    (sent,) = sts_s3.proxy.policies  # the document trainpod sent to STS is the one generated for the run
    assert sent == credentials.session_policy(credentials.run_scope(_spec(sts_s3)))
    res = subprocess.run([sys.executable, "-c", PROBE, sts_s3.bucket, sts_s3.uri(f"trainpod/runs/{RUN_ID}"),
                          sts_s3.uri("trainpod/runs/someone-else"), sts_s3.uri("datasets/sample"), str(tmp_path / "d")],
                         env=_pod_env(env, sts_s3), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)
    ok = [k for k in ALLOWED if results[k] == "allowed"] + [k for k in DENIED if results[k] == "denied"]
    chaos_record("scoped STS session (AssumeRole) on IAM-enforcing moto: allowed / denied", len(ALLOWED + DENIED),
                 len(ok), f"allowed {[k for k in ALLOWED if results[k] == 'allowed']}; denied "
                 f"{[k for k in DENIED if results[k] == 'denied']}")
    chaos_record("  listing the bucket root (s3:prefix condition)", 1, 1,
                 f"policy-document level only: moto answered '{results['list bucket root']}' (it ignores "
                 "Conditions); the document lists only the run's prefixes")
    assert results == {**dict.fromkeys(ALLOWED, "allowed"), **dict.fromkeys(DENIED, "denied"),
                       "list bucket root": results["list bucket root"]}, results
    assert (tmp_path / "d" / "train.jsonl").is_file()
    assert sts_s3.proxy.denied_missing >= 1  # the missing DONE got AWS's 403, and still read as absent
    # the denied writes left nothing behind; the user's own keys still see the untouched dataset
    keys = {o["Key"] for o in sts_s3.client().list_objects_v2(Bucket=sts_s3.bucket)["Contents"]}
    assert "trainpod/runs/someone-else/evil.txt" not in keys and "datasets/sample/train.jsonl" in keys
    body = sts_s3.client().get_object(Bucket=sts_s3.bucket, Key="datasets/sample/train.jsonl")["Body"].read()
    assert body != b"poisoned"


def test_a_session_for_another_run_cannot_read_this_one(sts_s3, chaos_record):
    """Two runs, two sessions: the second run's session is denied the first run's output (and vice versa for its
    own output being allowed), so a leaked pod key exposes one run only."""
    _seed(sts_s3)
    settings = load_settings()
    first = _spec(sts_s3)
    sts_s3.client().put_object(Bucket=sts_s3.bucket, Key=f"trainpod/runs/{RUN_ID}/adapter.safetensors", Body=b"w")
    second = first.model_copy(update={"run_id": "scoped-run-2", "storage": StorageURIs(
        dataset=first.storage.dataset, output=sts_s3.uri("trainpod/runs/scoped-run-2"))})
    client = sts_s3.client(credentials.mint(second, settings).env())
    from botocore.exceptions import ClientError

    denied = 0
    for key in (f"trainpod/runs/{RUN_ID}/adapter.safetensors", f"trainpod/runs/{RUN_ID}/x"):
        with pytest.raises(ClientError) as info:
            client.get_object(Bucket=sts_s3.bucket, Key=key)
        denied += info.value.response["Error"]["Code"] == "AccessDenied"
    client.put_object(Bucket=sts_s3.bucket, Key="trainpod/runs/scoped-run-2/own.txt", Body=b"ok")
    chaos_record("scoped STS session of run B reading run A's output", 2, denied, f"{denied}/2 AccessDenied")
    assert denied == 2


def test_user_keys_never_reach_the_pod_env_or_the_plan(sts_s3, chaos_record):
    """The canary here is the IAM user's secret: it is in the CLI's environment only."""
    from trainpod.backends.runpod import RunPodBackend, pod_secret_env

    spec = _spec(sts_s3).model_copy(update={"image": "127.0.0.1:5055/trainpod:cpu-0123456789ab"})
    cfg = spec.config.model_copy(update={"hardware": spec.config.hardware.model_copy(update={
        "runpod_gpu_type_id": "NVIDIA GeForce RTX 4090"})})
    spec = spec.model_copy(update={"config": cfg})
    settings = load_settings(runpod_cpu_stand_in=True)
    plan = RunPodBackend().plan(spec, settings)
    env = {**plan.env, **pod_secret_env(plan, settings)}
    blobs = {"plan": json.dumps(plan.display()), "pod env": json.dumps(env),
             "registry record": plan.model_dump_json()}
    found = [where for where, text in blobs.items() if sts_s3.user[1] in text or sts_s3.user[0] in text]
    chaos_record("canary: the user's AWS key id + secret in plan / pod env / recorded plan", 3, 3 - len(found),
                 f"{len(found)} hits; the pod env holds an ASIA session key + token")
    assert not found and env["AWS_ACCESS_KEY_ID"].startswith("ASIA") and env["AWS_SESSION_TOKEN"]


def test_no_sts_at_the_endpoint_is_refused_unless_long_lived_keys_are_allowed(s3, monkeypatch, chaos_record):
    """An S3-compatible endpoint without STS (here: STS pointed at a server that only speaks S3-ish 404s) is
    refused with the way out; ``--allow-long-lived-credentials`` sends the user's keys instead."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class NoSTS(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<Error><Code>NotImplemented</Code><Message>STS is not supported</Message></Error>"
            self.send_response(501)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), NoSTS)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("TRAINPOD_STS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
        spec = RunSpec(run_id=RUN_ID, created="2026-01-01T00:00:00+00:00", remote="runpod",
                       config=load_catalog(use_cwd=False).resolve("smoke", {}),
                       storage=StorageURIs(dataset=s3.uri("datasets/x"), output=s3.uri(f"runs/{RUN_ID}")))
        from trainpod.errors import TrainpodError

        with pytest.raises(TrainpodError) as info:
            credentials.pod_s3_env(spec, load_settings())
        message = str(info.value)
        long_lived = credentials.pod_s3_env(spec, load_settings(allow_long_lived_credentials=True))
    finally:
        server.shutdown()
    ok = "has no STS" in message and "--allow-long-lived-credentials" in message
    chaos_record("S3 endpoint without STS: refused, opt-in sends own keys", 2,
                 int(ok) + int(long_lived.get("AWS_ACCESS_KEY_ID") == os.environ["AWS_ACCESS_KEY_ID"]),
                 "refusal names --allow-long-lived-credentials; the opt-in passes the user's keys")
    assert ok, message
    assert long_lived == {"AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
                          "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]}


def _trainer(spec: RunSpec, env: dict[str, str], work: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainpod_trainer"],
                          env={**env, "TRAINPOD_RUN_SPEC": spec.to_json(), "TRAINPOD_WORK_DIR": str(work),
                               "TRAINPOD_LOG_UPLOAD_SECONDS": "0.5"},
                          capture_output=True, text=True, timeout=300)


@pytest.mark.train
def test_credentials_expiring_mid_run_stop_with_a_checkpoint_and_resume(sts_s3, tmp_path, chaos_record):
    """The session expires mid-run (once the first checkpoint is complete in S3 the proxy answers ExpiredToken for
    it, as S3 does for an expired STS session): the trainer stops with exit 3 and a complete checkpoint in S3, keeps its
    local checkpoints, says why; a fresh session (what ``--resume`` mints) resumes it to DONE."""
    from trainpod import storage as st

    _seed(sts_s3)
    cfg = load_catalog(use_cwd=False).resolve("smoke", {"max_steps": 12, "save_steps": 2, "eval_steps": 12,
                                                        "keep_checkpoints": 50})
    spec = RunSpec(run_id=RUN_ID, created="2026-01-01T00:00:00+00:00", remote="runpod", config=cfg,
                   storage=StorageURIs(dataset=sts_s3.uri("datasets/sample"),
                                       output=sts_s3.uri(f"trainpod/runs/{RUN_ID}")), stop_grace_seconds=20)
    settings = load_settings()
    env = _pod_env(credentials.mint(spec, settings).env(), sts_s3)
    proc = subprocess.Popen([sys.executable, "-m", "trainpod_trainer"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**env, "TRAINPOD_RUN_SPEC": spec.to_json(), "TRAINPOD_WORK_DIR": str(tmp_path / "w1"),
                                 "TRAINPOD_LOG_UPLOAD_SECONDS": "0.5"})
    try:  # the session expires once the first checkpoint is complete in S3
        end = time.monotonic() + 240
        while st.latest_complete_checkpoint(spec.storage.checkpoints, settings) is None:
            assert proc.poll() is None and time.monotonic() < end, proc.communicate()[0][-3000:]
            time.sleep(0.2)
        sts_s3.proxy.expire_all()
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    first = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    log1 = first.stdout + first.stderr
    expired_hits = sts_s3.proxy.expired_hits
    remote = st.latest_complete_checkpoint(spec.storage.checkpoints, settings)
    local = sorted(p.name for p in (tmp_path / "w1").rglob("step-*") if (p / "manifest.json").is_file())
    second = _trainer(spec.model_copy(update={"resume": True}), _pod_env(credentials.mint(spec, settings).env(), sts_s3),
                      tmp_path / "w2")
    done = st.exists(spec.storage.done_marker, settings)
    log2 = second.stdout + second.stderr
    resumed_from = remote.rstrip("/").rpartition("/")[2] if remote else None
    chaos_record("S3 session expires mid-run -> stop with checkpoint -> resume", 1,
                 int(first.returncode == 3 and done and second.returncode == 0),
                 f"exit {first.returncode} after {expired_hits} ExpiredToken answers; complete in S3: {resumed_from}; "
                 f"kept locally: {local[-1] if local else None}; resumed exit {second.returncode}, DONE={done}")
    assert first.returncode == 3, log1[-3000:]
    assert "S3 refused the run's credentials" in log1 and "ExpiredToken" in log1, log1[-3000:]
    assert remote is not None and local, log1[-3000:]
    assert local[-1] >= resumed_from  # the local copy is kept, at least as new as the one in S3
    assert second.returncode == 0 and done, log2[-3000:]
    assert f"fetched checkpoint {resumed_from}" in log2


@pytest.mark.docker
def test_a_container_with_the_session_is_held_to_its_run(sts_s3, docker_env, cpu_image, chaos_record):
    """The probe in the trainer image on the local engine (host network), with only the session in its env."""
    _seed(sts_s3)
    session = credentials.mint(_spec(sts_s3), load_settings())
    env = {**session.env(), "AWS_ENDPOINT_URL": sts_s3.endpoint, "AWS_REGION": "us-east-1"}
    out = docker_env.client().containers.run(
        cpu_image.tag, command=["python", "-c", PROBE, sts_s3.bucket, sts_s3.uri(f"trainpod/runs/{RUN_ID}"),
                                sts_s3.uri("trainpod/runs/someone-else"), sts_s3.uri("datasets/sample"), "/tmp/d"],
        environment=env, network_mode="host", remove=True, stdout=True, stderr=False)
    results = json.loads(out.decode().strip().splitlines()[-1])
    ok = [k for k in ALLOWED if results[k] == "allowed"] + [k for k in DENIED if results[k] == "denied"]
    chaos_record("  the same in a container (CPU image, only the session in its env)", len(ALLOWED + DENIED), len(ok),
                 f"denied {[k for k in DENIED if results[k] == 'denied']}")
    assert results == {**dict.fromkeys(ALLOWED, "allowed"), **dict.fromkeys(DENIED, "denied"),
                       "list bucket root": results["list bucket root"]}, results
