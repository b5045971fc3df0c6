"""trainpod.storage without a network: URIs, local stores, hash cache, error mapping, lazy imports."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from trainpod import storage
from trainpod.errors import TrainpodError
from trainpod.manifest import build_manifest, manifest_digest, write_manifest
from trainpod.settings import Settings


def tree(root: Path, n: int = 8) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        rel = f"sub{i % 2}/f{i}.txt"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        data = f"row {i}\n".encode() * (i + 1)
        (root / rel).write_bytes(data)
        out[rel] = data
    return out


def test_uri_parsing_and_joining():
    loc = storage.parse_s3_uri("s3://bucket/a/b/")
    assert (loc.bucket, loc.prefix, loc.key("c/d"), str(loc)) == ("bucket", "a/b", "a/b/c/d", "s3://bucket/a/b")
    assert storage.parse_s3_uri("s3://bucket").key("x") == "x"
    assert storage.join_uri("s3://b/p/", "/step-00000001") == "s3://b/p/step-00000001"
    with pytest.raises(TrainpodError, match="no bucket"):
        storage.parse_s3_uri("s3:///x")
    with pytest.raises(TrainpodError, match="unsupported storage URI"):
        storage.open_store("gs://bucket/x")


def test_importing_storage_and_help_do_not_import_boto3():
    code = ("import sys, trainpod.storage, trainpod.commands.data; "
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "trainpod", "data", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "push" in out.stdout
    assert "boto3" not in out.stderr and "botocore" not in out.stderr


def test_local_sync_round_trip_noop_and_touch(tmp_path):
    src, dest, back = tmp_path / "src", tmp_path / "remote", tmp_path / "back"
    files = tree(src)
    first = storage.sync_up(src, str(dest))
    assert len(first.transferred) == len(files)
    assert (dest / storage.PREFIX_MANIFEST).is_file()
    assert storage.sync_up(src, str(dest)).transferred == []
    for p in src.rglob("*"):
        os.utime(p, (1_000_000_000, 1_000_000_000))
    assert storage.sync_up(src, str(dest)).transferred == []
    pulled = storage.sync_down(str(dest), back)
    assert {p.relative_to(back).as_posix(): p.read_bytes() for p in back.rglob("*.txt")} == files
    assert pulled.manifest_sha256 == first.manifest_sha256


def test_dataset_digest_matches_foundation_manifest(tmp_path):
    src = tmp_path / "ds"
    tree(src)
    expected = manifest_digest(build_manifest(src))
    assert storage.dataset_manifest_digest(str(src)) == expected
    res = storage.sync_up(src, str(tmp_path / "pushed"))
    assert res.manifest_sha256 == expected
    assert storage.dataset_manifest_digest(str(tmp_path / "pushed")) == expected
    single = tmp_path / "train.jsonl"
    single.write_text('{"text": "x"}\n')
    assert len(storage.dataset_manifest_digest(str(single))) == 64
    with pytest.raises(TrainpodError, match="not found"):
        storage.dataset_manifest_digest(str(tmp_path / "missing"))


def test_hash_cache_is_keyed_by_stat_and_persisted(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"one")
    cache = storage.HashCache(tmp_path / "state")
    first = cache.sha256(f)
    cache.save()
    reloaded = storage.HashCache(tmp_path / "state")
    assert reloaded.lookup(str(f.resolve()), f.stat()) == first
    f.write_bytes(b"two!")  # size (and mtime) change: a miss, then the new hash
    assert reloaded.lookup(str(f.resolve()), f.stat()) is None
    assert reloaded.sha256(f) != first


def test_single_objects_land_next_to_their_siblings_and_a_bucket_is_no_object(tmp_path):
    run = tmp_path / "run"
    storage.write_bytes(str(run / "DONE"), b"run-1\n")
    assert storage.read_bytes(str(run / "DONE")) == b"run-1\n" and storage.exists(str(run / "DONE"))
    assert storage.open_store(str(run)).list() == {"DONE": 6}  # in the parent, under its own name
    with pytest.raises(TrainpodError, match="names a bucket, not an object"):
        storage.write_bytes("s3://just-a-bucket", b"x")


class _S3Errors(http.server.BaseHTTPRequestHandler):
    """A loopback S3 endpoint that answers every request to bucket NAME with the error NAME stands for."""

    ANSWERS = {"missing": (404, "NoSuchBucket"), "denied": (403, "AccessDenied"), "badkey": (403, "InvalidAccessKeyId")}

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, code = self.ANSWERS[self.path.lstrip("/").split("/")[0]]
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = _answer


@pytest.fixture
def s3_errors():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _S3Errors)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_s3_errors_name_the_bucket_and_the_setting_to_check(s3_errors, monkeypatch):
    """What S3 answers (or that nothing answers) becomes one message naming the bucket and a hint naming the
    setting to check, through the public calls (an upload here)."""
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    keys = {"aws_access_key_id": "AKIAEXAMPLE", "aws_secret_access_key": "s3cr3t-example"}
    cases = [
        (s3_errors, "missing", "does not exist", "AWS_ENDPOINT_URL"),
        (s3_errors, "denied", "access denied", "AWS_ACCESS_KEY_ID"),
        (s3_errors, "badkey", "credentials rejected", "AWS_SECRET_ACCESS_KEY"),
        ("http://127.0.0.1:9", "unreachable", "cannot reach", "TRAINPOD_S3_ENDPOINT_URL"),  # discard port
    ]
    for endpoint, bucket, message, setting in cases:
        settings = Settings(s3_endpoint_url=endpoint, aws_region="us-east-1", **keys)
        with pytest.raises(TrainpodError) as err:
            storage.write_bytes(f"s3://{bucket}/run/DONE", b"x", settings)
        assert message in err.value.message and bucket in err.value.message and setting in err.value.hint, err.value


def test_uploader_refuses_unfinished_checkpoints(tmp_path):
    up = storage.CheckpointUploader(str(tmp_path / "dest"), keep_last=2)
    partial = tmp_path / "step-00000005"
    partial.mkdir()
    (partial / "w.bin").write_bytes(b"x")
    with pytest.raises(TrainpodError, match="no valid manifest.json"):
        up.submit(partial)
    wrong = tmp_path / "ckpt-5"
    wrong.mkdir()
    write_manifest(wrong)
    with pytest.raises(TrainpodError, match="step-NNNNNNNN"):
        up.submit(wrong)
    assert up.close(timeout=5)
    with pytest.raises(TrainpodError, match="keep_last"):
        storage.CheckpointUploader(str(tmp_path / "dest"), keep_last=0)


def test_local_markers(tmp_path):
    done = str(tmp_path / "run" / "DONE")
    assert storage.read_bytes(done) is None and not storage.exists(done)
    storage.write_bytes(done, b"ok")
    assert storage.exists(done) and storage.read_bytes(done) == b"ok"
    storage.delete(done)
    assert not storage.exists(done)


def test_progress_goes_to_stderr_and_counts_files(tmp_path, capsys):
    src = tmp_path / "src"
    tree(src, n=4)
    res = storage.sync_up(src, str(tmp_path / "dest"), progress=True)
    out, err = capsys.readouterr()
    assert len(res.transferred) == 4 and out == ""
    assert "4/4 files" in err
