"""Storage decides by content: same-size files with other bytes (and their mtime put back) are changes.

Against the loopback moto server (tests/fixtures/s3.py). Every test changes bytes without changing sizes,
and restores the modification time with os.utime, so only a content check can tell.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.test_storage import make_checkpoint, make_tree, read_tree
from trainpod import storage

pytestmark = pytest.mark.s3


def rewrite_same_size_keep_mtime(path: Path) -> bytes:
    """Flip the bytes of ``path`` in place (same inode, same size) and put its atime/mtime back."""
    st = path.stat()
    data = bytes(b ^ 0xFF for b in path.read_bytes())
    with open(path, "r+b") as fh:
        fh.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
    return data


def remote_bytes(s3, key: str) -> bytes:
    return s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()


def test_push_sends_a_same_size_rewrite_whose_mtime_was_restored(s3, tmp_path):
    src = tmp_path / "src"
    make_tree(src, n=6)
    first = storage.sync_up(src, s3.uri("ds"))
    rel = "part-1/file-0004.bin"
    new = rewrite_same_size_keep_mtime(src / rel)
    s3.proxy.reset()
    res = storage.sync_up(src, s3.uri("ds"))
    assert res.transferred == [(rel, len(new))] and res.unchanged == 5
    assert remote_bytes(s3, f"ds/{rel}") == new
    assert res.manifest_sha256 != first.manifest_sha256
    assert storage.dataset_manifest_digest(s3.uri("ds")) == storage.dataset_manifest_digest(str(src))


def test_pull_replaces_a_same_size_local_edit_whose_mtime_was_restored(s3, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, n=6)
    storage.sync_up(src, s3.uri("ds"))
    dst = tmp_path / "dst"
    storage.sync_down(s3.uri("ds"), dst)
    rel = "part-2/file-0005.bin"
    rewrite_same_size_keep_mtime(dst / rel)
    res = storage.sync_down(s3.uri("ds"), dst)
    assert res.transferred == [(rel, len(files[rel]))]
    assert read_tree(dst) == files


def test_live_file_shipping_sees_a_rewrite_whose_mtime_was_restored(s3, tmp_path):
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    (out / "status.json").write_bytes(b'{"step": 1}')
    store = storage.open_store(s3.uri("live"))
    sent: dict = {}
    storage.ship_changed(store, out, ["status.json"], sent)
    new = rewrite_same_size_keep_mtime(out / "status.json")
    storage.ship_changed(store, out, ["status.json"], sent)
    assert remote_bytes(s3, "live/status.json") == new


def test_a_checkpoint_with_same_size_other_bytes_is_not_resumed(s3, tmp_path):
    ckpts = tmp_path / "ckpts"
    up = storage.CheckpointUploader(s3.uri("run/checkpoints"), keep_last=10)
    for step in (10, 20):
        up.submit(make_checkpoint(ckpts, step))
    assert up.close(timeout=60)
    key = "run/checkpoints/step-00000020/adapter/weights.bin"
    good = remote_bytes(s3, key)
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=bytes(b ^ 0xFF for b in good))  # same size
    # sizes alone call step 20 complete; its content does not verify, so step 10 is what a resume gets
    assert storage.latest_complete_checkpoint(s3.uri("run/checkpoints")).endswith("step-00000020")
    local = tmp_path / "resume"
    got = storage.fetch_latest_checkpoint(s3.uri("run/checkpoints"), local)
    assert got == local / "step-00000010"
    assert read_tree(got) == read_tree(ckpts / "step-00000010")
    assert sorted(p.name for p in local.iterdir()) == ["step-00000010"]  # no partial copy of step 20 left
    # nothing verifies: None, not a half-fetched directory
    key10 = "run/checkpoints/step-00000010/trainer_state.json"
    s3.client().put_object(Bucket=s3.bucket, Key=key10, Body=b"x" * len(remote_bytes(s3, key10)))
    assert storage.fetch_latest_checkpoint(s3.uri("run/checkpoints"), tmp_path / "none") is None


def test_a_local_checkpoint_with_same_size_other_bytes_is_not_resumed(tmp_path):
    """The trainer's local pick (``--remote local`` and the pod's own disk) verifies sha256 too."""
    from trainpod_trainer.checkpoint import find_resume

    ckpts = tmp_path / "ckpts"
    for step in (10, 20):
        make_checkpoint(ckpts, step)
    rewrite_same_size_keep_mtime(ckpts / "step-00000020" / "adapter" / "weights.bin")
    assert find_resume(ckpts) == ckpts / "step-00000010"
