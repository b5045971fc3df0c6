"""trainpod.storage over real HTTP: moto server on 127.0.0.1 behind a counting, fault-injecting proxy."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainpod import storage
from trainpod.errors import TrainpodError
from trainpod.manifest import checkpoint_name, verify_dir, write_manifest

pytestmark = pytest.mark.s3


def make_tree(root: Path, n: int = 20, size: int = 4096, seed: int = 0) -> dict[str, bytes]:
    """Deterministic files in nested directories; returns rel path -> content."""
    out = {}
    for i in range(n):
        rel = f"part-{i % 3}/file-{i:04d}.bin"
        data = hashlib.sha256(f"{seed}-{i}".encode()).digest() * (size // 32) + bytes([i % 256])
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        out[rel] = data
    return out


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".trainpod" not in p.parts}


def make_checkpoint(root: Path, step: int, payload: bytes = b"w" * 5000) -> Path:
    d = root / checkpoint_name(step)
    (d / "adapter").mkdir(parents=True, exist_ok=True)
    (d / "adapter" / "weights.bin").write_bytes(payload + step.to_bytes(4, "big"))
    (d / "trainer_state.json").write_text(json.dumps({"step": step}))
    write_manifest(d)
    return d


def test_round_trip_is_byte_identical_including_multipart(s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, n=30)
    big = os.urandom(1024) * (storage.MULTIPART_THRESHOLD // 1024 + 300)  # > threshold: multipart path
    (src / "big.bin").write_bytes(big)
    files["big.bin"] = big
    up = storage.sync_up(src, s3.uri("ds/v1"))
    assert len(up.transferred) == 31 and up.unchanged == 0
    assert s3.proxy.counts["POST"] >= 2  # CreateMultipartUpload + Complete: the big file went multipart

    down = storage.sync_down(s3.uri("ds/v1"), tmp_path / "dst")
    assert down.verified_by == "sha256" and down.manifest_sha256 == up.manifest_sha256
    assert read_tree(tmp_path / "dst") == files
    assert storage.dataset_manifest_digest(s3.uri("ds/v1")) == up.manifest_sha256
    assert storage.dataset_manifest_digest(str(tmp_path / "dst")) == up.manifest_sha256
    # a second pull moves nothing
    again = storage.sync_down(s3.uri("ds/v1"), tmp_path / "dst")
    assert again.transferred == [] and again.unchanged == 31


def test_repush_touch_and_single_change_count_puts(s3, tmp_path):
    src = tmp_path / "src"
    make_tree(src, n=40)
    storage.sync_up(src, s3.uri("ds"))
    assert s3.proxy.counts["PUT"] == 42  # push marker, 40 files, manifest

    s3.proxy.reset()
    res = storage.sync_up(src, s3.uri("ds"))
    assert res.transferred == [] and s3.proxy.counts["PUT"] == 0 and s3.proxy.counts["POST"] == 0

    # a fresh checkout: every mtime changes (and the hash cache misses), content does not
    future = time.time() + 3600
    for p in src.rglob("*"):
        os.utime(p, (future, future))
    s3.proxy.reset()
    res = storage.sync_up(src, s3.uri("ds"))
    assert res.transferred == [] and s3.proxy.counts["PUT"] == 0

    (src / "part-1/file-0004.bin").write_bytes(b"changed")
    s3.proxy.reset()
    res = storage.sync_up(src, s3.uri("ds"))
    assert res.transferred == [("part-1/file-0004.bin", 7)]
    puts = [path.split("?")[0].split("/ds/", 1)[1] for method, path in s3.proxy.log if method == "PUT"]
    assert puts == [".trainpod/pushing", "part-1/file-0004.bin", ".trainpod/manifest.json"]


def test_run_outputs_exclude_checkpoints_and_done_goes_last(s3, tmp_path):
    out = tmp_path / "out"
    make_tree(out / "adapter", n=5)
    make_checkpoint(out / "checkpoints", 3)
    (out / "metadata.json").write_text("{}")
    (out / "DONE").write_text("ok")
    res = storage.sync_up(out, s3.uri("run"), exclude=("checkpoints/",), last=("DONE",))
    assert not any(p.startswith("checkpoints/") for p, _ in res.transferred)
    puts = [path for method, path in s3.proxy.log if method == "PUT"]
    assert puts[-1].endswith("/run/DONE") and puts[-2].endswith("/run/.trainpod/manifest.json")
    assert len(puts) == 1 + 5 + 1 + 1 + 1  # push marker, adapter files, metadata.json, manifest, DONE
    assert storage.sync_up(out, s3.uri("run"), exclude=("checkpoints/",), last=("DONE",)).transferred == []


def test_dry_run_moves_nothing_and_delete_prunes(s3, tmp_path):
    src = tmp_path / "src"
    make_tree(src, n=6)
    plan = storage.sync_up(src, s3.uri("p"), dry_run=True)
    assert len(plan.transferred) == 6 and plan.dry_run
    assert s3.proxy.counts["PUT"] == 0 and storage.list_uri(s3.uri("p"))["files"] == []

    storage.sync_up(src, s3.uri("p"))
    (src / "part-0/file-0000.bin").unlink()
    keep = storage.sync_up(src, s3.uri("p"))  # without --delete the remote copy stays, described
    assert keep.deleted == [] and len(storage.list_uri(s3.uri("p"))["files"]) == 6
    pruned = storage.sync_up(src, s3.uri("p"), delete=True)
    assert pruned.deleted == ["part-0/file-0000.bin"]
    listing = storage.list_uri(s3.uri("p"))
    assert len(listing["files"]) == 5 and all(f["sha256"] for f in listing["files"])

    # an object removed behind trainpod's back: the manifest-only push trusts the manifest, --verify repairs
    s3.client().delete_object(Bucket=s3.bucket, Key="p/part-1/file-0001.bin")
    assert storage.sync_up(src, s3.uri("p")).transferred == []
    s3.proxy.reset()
    repaired = storage.sync_up(src, s3.uri("p"), verify=True)
    assert repaired.transferred == [("part-1/file-0001.bin", 4097)]
    assert s3.proxy.counts["PUT"] == 3  # push marker, the file, the manifest

    # pull --delete removes local strays
    dst = tmp_path / "dst"
    storage.sync_down(s3.uri("p"), dst)
    (dst / "stray.txt").write_text("x")
    res = storage.sync_down(s3.uri("p"), dst, delete=True)
    assert res.deleted == ["stray.txt"] and not (dst / "stray.txt").exists()


def test_interrupted_pull_leaves_no_whole_looking_file(s3, tmp_path):
    src = tmp_path / "src"
    make_tree(src, n=3)
    storage.sync_up(src, s3.uri("c"))
    # corrupt one object behind trainpod's back (same size, different bytes)
    client = s3.client()
    key = "c/part-0/file-0000.bin"
    size = client.head_object(Bucket=s3.bucket, Key=key)["ContentLength"]
    client.put_object(Bucket=s3.bucket, Key=key, Body=b"\0" * size)
    with pytest.raises(TrainpodError, match="sha256 mismatch"):
        storage.sync_down(s3.uri("c"), tmp_path / "dst")
    assert not (tmp_path / "dst" / "part-0" / "file-0000.bin").exists()
    assert not list((tmp_path / "dst").rglob(".tmp-*"))
    assert not (tmp_path / "dst" / ".trainpod" / "manifest.json").exists()


def test_latest_complete_checkpoint_skips_partial_and_truncated(s3, tmp_path):
    ckpts = tmp_path / "ckpts"
    up = storage.CheckpointUploader(s3.uri("run/checkpoints"), keep_last=10)
    for step in (10, 20, 30):
        up.submit(make_checkpoint(ckpts, step))
    assert up.close(timeout=60)
    client = s3.client()
    # step 30: truncated weight file; step 20: manifest missing
    client.put_object(Bucket=s3.bucket, Key="run/checkpoints/step-00000030/adapter/weights.bin", Body=b"short")
    client.delete_object(Bucket=s3.bucket, Key="run/checkpoints/step-00000020/manifest.json")
    assert storage.latest_complete_checkpoint(s3.uri("run/checkpoints")) == s3.uri("run/checkpoints/step-00000010")

    local = storage.download_checkpoint(s3.uri("run/checkpoints/step-00000010"), tmp_path / "resume")
    assert read_tree(local) == read_tree(ckpts / "step-00000010")
    assert verify_dir(local) == []  # the trainer's own check accepts the downloaded copy
    with pytest.raises(TrainpodError, match="incomplete"):
        storage.download_checkpoint(s3.uri("run/checkpoints/step-00000020"), tmp_path / "bad")

    # same size, wrong bytes: only the sha256 check at download time can catch it
    client.put_object(Bucket=s3.bucket, Key="run/checkpoints/step-00000010/trainer_state.json",
                      Body=b"x" * len((ckpts / "step-00000010/trainer_state.json").read_bytes()))
    with pytest.raises(TrainpodError, match="corrupt"):
        storage.download_checkpoint(s3.uri("run/checkpoints/step-00000010"), tmp_path / "bad2")
    assert not (tmp_path / "bad2" / "manifest.json").exists()


def test_uploader_retention_keeps_last_k_and_best(s3, tmp_path):
    ckpts = tmp_path / "ckpts"
    up = storage.CheckpointUploader(s3.uri("r/checkpoints"), keep_last=2)
    for step in (1, 2, 3, 4, 5):
        up.submit(make_checkpoint(ckpts, step), is_best=(step == 2))
    assert up.wait(timeout=60)
    assert up.close(timeout=5)
    steps = sorted({k.split("/")[0] for k in storage.open_store(s3.uri("r/checkpoints")).list()
                    if k.startswith("step-")})
    assert steps == ["step-00000002", "step-00000004", "step-00000005"]
    assert len(up.uploaded) == 5
    assert storage.latest_complete_checkpoint(s3.uri("r/checkpoints")).endswith("step-00000005")
    with pytest.raises(TrainpodError, match="closed"):
        up.submit(make_checkpoint(ckpts, 6))


def test_uploader_close_respects_the_grace_period(s3, tmp_path):
    ckpt = tmp_path / "ckpts" / checkpoint_name(7)
    for i in range(12):
        (ckpt / f"{i:02d}.bin").parent.mkdir(parents=True, exist_ok=True)
        (ckpt / f"{i:02d}.bin").write_bytes(os.urandom(1000))
    write_manifest(ckpt)
    s3.proxy.faults.delay = 0.15  # ~1 s of uploads with 2 workers
    up = storage.CheckpointUploader(s3.uri("g"), keep_last=2, workers=2)
    up.submit(ckpt)
    t0 = time.monotonic()
    assert up.close(timeout=0.2) is False  # grace period too short: says so instead of blocking
    assert time.monotonic() - t0 < 1.0
    assert up.wait(timeout=30) is True  # the upload itself carries on and completes
    s3.proxy.faults.delay = 0.0
    assert storage.latest_complete_checkpoint(s3.uri("g")) == s3.uri("g/step-00000007")


def test_uploader_to_local_directory_needs_no_bucket(tmp_path):
    ckpts = tmp_path / "train"
    dest = tmp_path / "out" / "checkpoints"
    up = storage.CheckpointUploader(str(dest), keep_last=1)
    for step in (1, 2):
        up.submit(make_checkpoint(ckpts, step))
    assert up.close(timeout=30)
    assert sorted(p.name for p in dest.iterdir() if p.name.startswith("step-")) == ["step-00000002"]
    assert storage.latest_complete_checkpoint(str(dest)) == str(dest / "step-00000002")


_KILL_SCRIPT = """
import sys
from trainpod.storage import CheckpointUploader
up = CheckpointUploader(sys.argv[1], keep_last=5, workers=2)
up.submit(sys.argv[2])
print("started", flush=True)
up.close(timeout=300)
"""


_PUSH_SCRIPT = """
import sys
from trainpod.storage import sync_up
sync_up(sys.argv[1], sys.argv[2], workers=2)
"""


def test_push_killed_midway_is_refused_by_pull_until_redone(s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, n=60, size=1024)
    storage.sync_up(src, s3.uri("d"))
    for rel in list(files)[:40]:  # a new version of most files
        files[rel] = b"v2" + files[rel]
        (src / rel).write_bytes(files[rel])
    s3.proxy.reset()
    s3.proxy.faults.delay = 0.05
    proc = subprocess.Popen([sys.executable, "-c", _PUSH_SCRIPT, str(src), s3.uri("d")], env=os.environ.copy())
    deadline = time.monotonic() + 30
    while s3.proxy.counts["PUT"] < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait(10)
    s3.proxy.faults.delay = 0.0
    with pytest.raises(TrainpodError, match="interrupted"):
        storage.sync_down(s3.uri("d"), tmp_path / "dst")
    with pytest.raises(TrainpodError, match="no dataset manifest"):
        storage.dataset_manifest_digest(s3.uri("d"))
    storage.sync_up(src, s3.uri("d"))
    storage.sync_down(s3.uri("d"), tmp_path / "dst")
    assert read_tree(tmp_path / "dst") == files


def test_upload_killed_midway_leaves_nothing_complete(s3, tmp_path):
    ckpts = tmp_path / "ckpts"
    storage.CheckpointUploader(s3.uri("k"), keep_last=5).close(timeout=1)
    first = make_checkpoint(ckpts, 1)
    up = storage.CheckpointUploader(s3.uri("k"), keep_last=5)
    up.submit(first)
    assert up.close(timeout=30)

    big = ckpts / checkpoint_name(2)
    for i in range(60):
        (big / "shards").mkdir(parents=True, exist_ok=True)
        (big / "shards" / f"{i:03d}.bin").write_bytes(os.urandom(2048))
    write_manifest(big)
    s3.proxy.reset()
    s3.proxy.faults.delay = 0.05  # slow every request so the kill lands mid-upload
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, s3.uri("k"), str(big)],
                            stdout=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 30
    while s3.proxy.counts["PUT"] < 10 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait(10)
    s3.proxy.faults.delay = 0.0
    puts = s3.proxy.counts["PUT"]
    assert 10 <= puts < 61, puts
    listing = storage.open_store(s3.uri("k")).list()
    assert any(k.startswith("step-00000002/") for k in listing)  # some objects made it
    assert "step-00000002/manifest.json" not in listing
    assert storage.latest_complete_checkpoint(s3.uri("k")) == s3.uri("k/step-00000001")


def test_sync_survives_5xx_and_dropped_connections(s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, n=60, size=2048)
    big = os.urandom(storage.MULTIPART_THRESHOLD + 5000)
    (src / "big.bin").write_bytes(big)
    files["big.bin"] = big
    s3.proxy.faults.rate = 0.2
    storage.sync_up(src, s3.uri("f"))
    storage.sync_down(s3.uri("f"), tmp_path / "dst")
    injected = dict(s3.proxy.injected)
    s3.proxy.faults.rate = 0.0
    assert read_tree(tmp_path / "dst") == files
    assert sum(injected.values()) >= 10 and {"500", "503", "drop"} <= set(injected), injected


def test_errors_name_bucket_and_setting_without_secrets(s3, tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_tree(src, n=1)
    with pytest.raises(TrainpodError) as err:
        storage.sync_up(src, "s3://no-such-bucket-tp/x")
    text = str(err.value)
    assert "no-such-bucket-tp" in text and "AWS_ENDPOINT_URL" in text
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in text

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(TrainpodError) as err:
        storage.list_uri(s3.uri("x"))
    text = str(err.value)
    assert "cannot reach" in text and s3.bucket in text and "TRAINPOD_S3_ENDPOINT_URL" in text
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in text


def test_markers_and_single_objects(s3):
    done = s3.uri("run/DONE")
    assert storage.read_bytes(done) is None and not storage.exists(done)
    storage.write_bytes(done, b'{"ok": true}')
    assert storage.exists(done) and storage.read_bytes(done) == b'{"ok": true}'
    storage.delete(done)
    assert not storage.exists(done)


def test_data_cli_push_ls_pull(s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, n=5)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "trainpod", "data", *args], capture_output=True, text=True,
                              timeout=60, env=os.environ.copy())

    dry = run("push", str(src), s3.uri("cli"), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True and s3.proxy.counts["PUT"] == 0
    pushed = run("push", str(src), s3.uri("cli"), "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert len(json.loads(pushed.stdout)["transferred"]) == 5
    ls = run("ls", s3.uri("cli"), "--json")
    assert ls.returncode == 0 and json.loads(ls.stdout)["manifest_sha256"] == json.loads(pushed.stdout)["manifest_sha256"]
    human = run("ls", s3.uri("cli"))
    assert "part-0/file-0000.bin" in human.stdout
    pulled = run("pull", s3.uri("cli"), str(tmp_path / "dst"))
    assert pulled.returncode == 0, pulled.stderr
    assert read_tree(tmp_path / "dst") == files
    missing = run("push", str(src), "s3://no-such-bucket-cli/x")
    assert missing.returncode == 2 and "no-such-bucket-cli" in missing.stderr and "hint:" in missing.stderr
