"""S3 faults during checkpoint upload and dataset pull: nothing partial is ever taken as complete,
nothing corrupt is ever taken as good.

Faults come from the fault proxy in front of moto (tests/fixtures/s3.py): HTTP 500/503, dropped
connections, response bodies cut in half, and added latency, on a seeded fraction of requests.
An operation under faults may succeed (botocore and trainpod retry) or fail with a TrainpodError;
either is fine. What must never happen: ``latest_complete_checkpoint`` naming a checkpoint whose
verified download differs from what was written, or a pull returning bytes that differ.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainpod import storage
from trainpod.errors import TrainpodError
from trainpod.manifest import checkpoint_name, verify_dir, write_manifest

pytestmark = [pytest.mark.chaos, pytest.mark.s3]

SEED = 8
UPLOAD_TRIALS, KILL_TRIALS, PULL_TRIALS = 5, 3, 6
KINDS = ("500", "503", "drop", "truncate")


def _tree(root: Path, rng: random.Random, n: int, size: int) -> dict[str, bytes]:
    files = {}
    for i in range(n):
        rel = f"part-{i % 3}/f{i:03d}.bin"
        data = rng.randbytes(size + rng.randint(0, 512))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel] = data
    return files


def _checkpoint(root: Path, step: int, rng: random.Random, n: int = 8) -> dict[str, bytes]:
    files = _tree(root / checkpoint_name(step), rng, n, 4096)
    write_manifest(root / checkpoint_name(step))
    return files


def _read(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and p.name != "manifest.json" and ".trainpod" not in p.parts}


def _check_latest(s3, prefix: str, written: dict[int, dict[str, bytes]], dst: Path) -> tuple[int | None, bool]:
    """(step named complete or None, whether its verified download equals what was written)."""
    s3.proxy.faults.rate = 0.0
    latest = storage.latest_complete_checkpoint(s3.uri(prefix))
    if latest is None:
        return None, True
    step = int(latest.rsplit("-", 1)[1])
    local = storage.download_checkpoint(latest, dst)
    return step, not verify_dir(local) and _read(local) == written[step]


def test_checkpoint_upload_under_faults(s3, tmp_path, chaos_record):
    rng = random.Random(SEED)
    bad, failed_uploads, injected = [], 0, 0
    for trial in range(UPLOAD_TRIALS):
        prefix = f"up{trial}"
        written = {step: _checkpoint(tmp_path / prefix, step, rng) for step in (1, 2, 3)}
        s3.proxy.reset()
        s3.proxy.faults.rate, s3.proxy.faults.kinds = rng.uniform(0.1, 0.3), KINDS
        s3.proxy.faults.delay = rng.choice((0.0, 0.01))
        up = storage.CheckpointUploader(s3.uri(prefix), keep_last=2, workers=2)
        for step in written:
            up.submit(tmp_path / prefix / checkpoint_name(step))
        try:
            up.close(timeout=60)
        except TrainpodError:
            failed_uploads += 1  # reported, not silently "complete"
        injected += sum(s3.proxy.injected.values())
        step, ok = _check_latest(s3, prefix, written, tmp_path / f"dl{trial}")
        if not ok:
            bad.append((trial, step))
    chaos_record("S3 faults during checkpoint upload", UPLOAD_TRIALS, UPLOAD_TRIALS - len(bad),
                 f"{injected} faults injected; {failed_uploads} uploads reported failed; 0 partial accepted"
                 if not bad else f"partial/corrupt accepted: {bad}")
    assert not bad
    assert injected >= UPLOAD_TRIALS


_KILL = """
import sys
from trainpod.storage import CheckpointUploader
up = CheckpointUploader(sys.argv[1], keep_last=5, workers=2)
up.submit(sys.argv[2])
up.close(timeout=300)
"""


def test_checkpoint_upload_killed_under_faults(s3, tmp_path, chaos_record):
    """kill -9 of the uploading process at a random request count, with faults on the wire."""
    rng = random.Random(SEED + 1)
    bad, newest = [], []
    for trial in range(KILL_TRIALS):
        prefix = f"kill{trial}"
        written = {1: _checkpoint(tmp_path / prefix, 1, rng)}
        up = storage.CheckpointUploader(s3.uri(prefix), keep_last=5)
        up.submit(tmp_path / prefix / checkpoint_name(1))
        assert up.close(timeout=60)
        written[2] = _checkpoint(tmp_path / prefix, 2, rng, n=40)
        s3.proxy.reset()
        s3.proxy.faults.rate, s3.proxy.faults.kinds, s3.proxy.faults.delay = 0.15, KINDS, 0.02
        kill_after = rng.randint(2, 40)
        proc = subprocess.Popen([sys.executable, "-c", _KILL, s3.uri(prefix), str(tmp_path / prefix / checkpoint_name(2))],
                                env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while s3.proxy.counts["PUT"] < kill_after and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.kill()
        proc.wait(10)
        step, ok = _check_latest(s3, prefix, written, tmp_path / f"kdl{trial}")
        newest.append(step)
        if not ok or step is None:
            bad.append((trial, step))
    chaos_record("upload killed -9 mid-checkpoint under S3 faults", KILL_TRIALS, KILL_TRIALS - len(bad),
                 f"latest complete after kill: {newest} (1 = previous kept, 2 = finished before kill)")
    assert not bad


def test_dataset_pull_under_faults_never_accepts_corrupt_bytes(s3, tmp_path, chaos_record):
    rng = random.Random(SEED + 2)
    files = _tree(tmp_path / "ds", rng, 30, 3000)
    storage.sync_up(tmp_path / "ds", s3.uri("data"))
    exact, refused, corrupt, injected = 0, 0, 0, 0
    for trial in range(PULL_TRIALS):
        dst = tmp_path / f"pull{trial}"
        if trial == PULL_TRIALS - 1:  # an object replaced behind our back, same size, other bytes
            key = f"data/{sorted(files)[0]}"
            s3.client().put_object(Bucket=s3.bucket, Key=key, Body=bytes(len(files[sorted(files)[0]])))
        s3.proxy.reset()
        s3.proxy.faults.rate, s3.proxy.faults.kinds = rng.uniform(0.1, 0.3), KINDS
        try:
            storage.sync_down(s3.uri("data"), dst, workers=2)
        except TrainpodError:
            refused += 1
            got = None
        else:
            got = _read(dst)
        injected += sum(s3.proxy.injected.values())
        s3.proxy.faults.rate = 0.0
        if got is not None:
            if got == files:
                exact += 1
            else:
                corrupt += 1
    chaos_record("S3 faults during dataset pull (+1 tampered object)", PULL_TRIALS, exact + refused - corrupt,
                 f"{injected} faults; {exact} exact, {refused} refused with an error, {corrupt} corrupt accepted")
    assert corrupt == 0
    assert refused >= 1, "the tampered object (same size, other bytes) was not refused"
    assert injected >= PULL_TRIALS
