"""The trainer against S3 (moto over real HTTP on loopback): dataset pulled from s3://, checkpoints
shipped in the background (manifest last), logs/status shipped periodically, outputs with DONE
last, resume from the newest *complete* checkpoint in S3 on a fresh "pod" (an empty work dir).

Every run is a ``python -m trainpod_trainer`` subprocess whose only link to the test is S3, like a pod.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY
from tests.fixtures.train import SMOKE_STEPS, read_metrics, run_trainer, start_trainer, wait_for, write_spec

pytestmark = [pytest.mark.train, pytest.mark.s3]

STOPPED = 3  # trainpod_trainer.exitcodes.STOPPED


def s3_spec(tmp_path: Path, s3, run_id: str = "baseline-run", **overrides) -> Path:
    """The smoke spec with its dataset pushed to S3 (and pinned) and its output on S3."""
    from trainpod import storage
    from trainpod.spec import RunSpec, StorageURIs

    local = RunSpec.load(write_spec(tmp_path / "local-out", run_id, **overrides))
    dataset = s3.uri("datasets/sample")
    pushed = storage.sync_up(local.config.dataset.path, dataset)
    spec = local.model_copy(update={"storage": StorageURIs(dataset=dataset, output=s3.uri(f"runs/{run_id}")),
                                    "dataset_manifest_sha256": pushed.manifest_sha256})
    return spec.write(tmp_path / f"{run_id}.s3.spec.json")


def pod_env(s3, work: Path) -> dict[str, str]:
    """What a pod gets: S3 location + credentials, a scratch dir; logs shipped every second."""
    return {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1", "TRAINPOD_WORK_DIR": str(work), "TRAINPOD_STATE_DIR": str(work / "state"),
            "TRAINPOD_LOG_UPLOAD_SECONDS": "1"}


def keys(s3, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for page in s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix):
        out.update({o["Key"][len(prefix):]: o["Size"] for o in page.get("Contents", [])})
    return out


def s3_text(s3, key: str) -> str:
    return s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read().decode()


def s3_metrics(s3, run_id: str) -> dict[int, float]:
    losses: dict[int, float] = {}
    for line in s3_text(s3, f"runs/{run_id}/logs/metrics.jsonl").splitlines():
        rec = json.loads(line)
        losses[rec["step"]] = rec["loss"]
    return losses


def test_sigterm_then_resume_on_a_fresh_pod_from_s3(smoke_baseline, tmp_path, s3):
    spec = s3_spec(tmp_path, s3)
    run = "runs/baseline-run/"
    first = tmp_path / "pod1"
    proc = start_trainer(spec, **pod_env(s3, first))
    local_out = first / "output"
    wait_for(lambda: (local_out / "logs" / "metrics.jsonl").is_file() and len(read_metrics(local_out)) >= 13,
             timeout=120, proc=proc)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == STOPPED, log
    stopped_at = max(read_metrics(local_out))
    # the stop checkpoint finished uploading (manifest last) before exit; no DONE; final status shipped
    listing = keys(s3, run)
    ckpt = f"checkpoints/step-{stopped_at:08d}/"
    assert f"{ckpt}manifest.json" in listing and f"{ckpt}adapter_model.safetensors" in listing, sorted(listing)
    assert "DONE" not in listing
    status = json.loads(s3_text(s3, run + "status.json"))
    assert status["state"] == "stopped" and status["step"] == stopped_at
    assert "SIGTERM received" in s3_text(s3, run + "logs/train.log")

    second = tmp_path / "pod2"  # a new pod: nothing local, everything comes from S3
    res = run_trainer(spec, **pod_env(s3, second))
    assert res.returncode == 0, res.stderr
    assert f"fetched checkpoint step-{stopped_at:08d}" in res.stderr
    assert "resumed from" in res.stderr and f"(step {stopped_at}," in res.stderr

    got, want = s3_metrics(s3, "baseline-run"), read_metrics(smoke_baseline)
    assert sorted(got) == list(range(1, SMOKE_STEPS + 1))  # the first pod's lines were kept and appended to
    k1 = stopped_at + 1
    assert got[k1] == pytest.approx(want[k1], rel=1e-6, abs=1e-6), (k1, got[k1], want[k1])
    assert got[SMOKE_STEPS] == pytest.approx(want[SMOKE_STEPS], rel=1e-5, abs=1e-5)

    listing = keys(s3, run)
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metadata.json",
                 "run_spec.json", "best/manifest.json", "DONE"):
        assert name in listing, name
    meta = json.loads(s3_text(s3, run + "metadata.json"))
    assert meta["training"]["steps"] == SMOKE_STEPS
    pinned = json.loads(spec.read_text())["dataset_manifest_sha256"]
    assert meta["dataset_manifest_sha256"] == pinned
    assert json.loads(s3_text(s3, run + "status.json"))["state"] == "succeeded"
    # every checkpoint left in S3 is complete (manifest + its files); retention kept at most 2 + best
    dirs = {k.split("/")[1] for k in listing if k.startswith("checkpoints/step-")}
    assert dirs and all(f"checkpoints/{d}/manifest.json" in listing for d in dirs), sorted(listing)
    assert len(dirs) <= 3


def test_checkpoint_without_manifest_in_s3_is_not_resumed(smoke_baseline, tmp_path, s3):
    from trainpod import storage

    spec = s3_spec(tmp_path, s3)
    ckpts = s3.uri("runs/baseline-run/checkpoints")
    up = storage.CheckpointUploader(ckpts, keep_last=5)
    for step in (10, 20):
        up.submit(smoke_baseline / "checkpoints" / f"step-{step:08d}")
    assert up.close(timeout=60)
    s3.client().delete_object(Bucket=s3.bucket, Key="runs/baseline-run/checkpoints/step-00000020/manifest.json")

    pod = tmp_path / "pod"
    proc = start_trainer(spec, **pod_env(s3, pod))
    wait_for(lambda: (pod / "output" / "logs" / "metrics.jsonl").is_file() and read_metrics(pod / "output"),
             timeout=120, proc=proc)
    proc.send_signal(signal.SIGTERM)  # step 11 is all this test needs: stop there (saves ~20 steps)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == STOPPED, log
    assert "fetched checkpoint step-00000010" in log and "(step 10," in log
    assert "step-00000020" not in log.split("training:")[0]
    got, want = read_metrics(pod / "output"), read_metrics(smoke_baseline)
    assert min(got) == 11
    assert got[11] == pytest.approx(want[11], rel=1e-6, abs=1e-6)


def test_done_marker_in_s3_skips_training(tmp_path, s3):
    spec = s3_spec(tmp_path, s3, run_id="finished-run")
    s3.client().put_object(Bucket=s3.bucket, Key="runs/finished-run/DONE", Body=b"{}")
    res = run_trainer(spec, **pod_env(s3, tmp_path / "pod"))
    assert res.returncode == 0, res.stderr
    assert "s3://" in res.stderr and "already finished" in res.stderr
    assert sorted(keys(s3, "runs/finished-run/")) == ["DONE"]
    assert not (tmp_path / "pod" / "output" / "checkpoints").exists()


def test_dataset_changed_after_pinning_is_refused(tmp_path, s3):
    from trainpod.spec import RunSpec

    path = s3_spec(tmp_path, s3, run_id="repinned")
    spec = RunSpec.load(path)
    spec.model_copy(update={"dataset_manifest_sha256": "cd" * 32}).write(path)
    res = run_trainer(path, **pod_env(s3, tmp_path / "pod"))
    assert res.returncode == 2, res.stderr  # exitcodes.BAD_INPUT
    assert "dataset_manifest_sha256" in res.stderr and "cd" * 32 in res.stderr
    assert "DONE" not in keys(s3, "runs/repinned/")


def test_local_checkpoints_are_deleted_only_after_their_upload(tmp_path, s3):
    """Retention on the pod's disk never deletes the only copy: a checkpoint whose upload has not
    finished stays local however many newer ones exist."""
    from trainpod.manifest import write_manifest
    from trainpod.spec import RunSpec, StorageURIs
    from trainpod_trainer.sink import S3Sink

    local = RunSpec.load(write_spec(tmp_path / "x", "prune-run"))
    spec = local.model_copy(update={"storage": StorageURIs(dataset=local.storage.dataset,
                                                           output=s3.uri("runs/prune-run"))})
    out = tmp_path / "out"
    ckpts = out / "checkpoints"
    sink = S3Sink(spec)
    assert sink.start(out) is False
    sink.stage(tmp_path / "data", ckpts, resume=False)  # local dataset: nothing to pull
    s3.proxy.faults.delay = 0.3  # uploads take seconds: the loop below outruns them
    try:
        for step in (1, 2, 3):
            d = ckpts / f"step-{step:08d}"
            d.mkdir(parents=True)
            (d / "adapter_model.safetensors").write_bytes(os.urandom(2048))
            (d / "trainer_state.json").write_text(json.dumps({"step": step, "best_step": None}))
            write_manifest(d, step=step)
            sink.on_checkpoint(d)
            assert sink.prune(ckpts, keep=1) == []
        assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000001", "step-00000002", "step-00000003"]
    finally:
        s3.proxy.faults.delay = 0.0
    assert sink.uploader.wait(60)
    removed = sink.prune(ckpts, keep=1)
    assert sorted(p.name for p in removed) == ["step-00000001", "step-00000002"]
    assert [p.name for p in ckpts.iterdir()] == ["step-00000003"]
    sink.close()
    listing = keys(s3, "runs/prune-run/checkpoints/")
    assert "step-00000003/manifest.json" in listing and "step-00000002/manifest.json" in listing


def test_checkpoint_with_same_size_other_bytes_in_s3_is_not_resumed(smoke_baseline, tmp_path, s3):
    """Sizes say step 20 is whole, but one file's bytes differ from its manifest: the trainer resumes step 10."""
    from trainpod import storage

    spec = s3_spec(tmp_path, s3)
    up = storage.CheckpointUploader(s3.uri("runs/baseline-run/checkpoints"), keep_last=5)
    for step in (10, 20):
        up.submit(smoke_baseline / "checkpoints" / f"step-{step:08d}")
    assert up.close(timeout=60)
    key = "runs/baseline-run/checkpoints/step-00000020/adapter_model.safetensors"
    good = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=good[:-8] + bytes(b ^ 0xFF for b in good[-8:]))

    pod = tmp_path / "pod"
    proc = start_trainer(spec, **pod_env(s3, pod))
    wait_for(lambda: (pod / "output" / "logs" / "metrics.jsonl").is_file() and read_metrics(pod / "output"),
             timeout=120, proc=proc)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == STOPPED, log
    train_log = (pod / "output" / "logs" / "train.log").read_text()
    assert "step-00000020 is corrupt" in train_log and "trying an older checkpoint" in train_log  # says why
    assert "fetched checkpoint step-00000010" in log and "(step 10," in log
    got, want = read_metrics(pod / "output"), read_metrics(smoke_baseline)
    assert min(got) == 11 and got[11] == pytest.approx(want[11], rel=1e-6, abs=1e-6)
