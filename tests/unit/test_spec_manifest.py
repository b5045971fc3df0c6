"""RunSpec round trip and checkpoint manifests (the completeness rule)."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from trainpod.config import load_catalog
from trainpod.errors import ConfigError
from trainpod.manifest import (
    build_manifest,
    checkpoint_name,
    latest_complete,
    manifest_digest,
    read_manifest,
    verify_dir,
    write_manifest,
)
from trainpod.spec import SPEC_ENV, RunSpec, StorageURIs, new_run_id, utcnow_iso


def make_spec(**kw) -> RunSpec:
    cfg = load_catalog(use_cwd=False).resolve("smoke")
    return RunSpec(run_id=new_run_id("smoke"), created=utcnow_iso(), remote="local", config=cfg,
                   storage=StorageURIs(dataset=cfg.dataset.path, output="/tmp/out"), **kw)


def test_runspec_roundtrip_file_and_env(tmp_path, monkeypatch):
    spec = make_spec()
    p = spec.write(tmp_path / "spec.json")
    assert RunSpec.load(p) == spec
    monkeypatch.setenv(SPEC_ENV, spec.to_json())
    assert RunSpec.load() == spec
    assert spec.storage.checkpoints == "/tmp/out/checkpoints" and spec.storage.done_marker == "/tmp/out/DONE"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temp file


def test_runspec_is_frozen_and_revalidated():
    spec = make_spec()
    with pytest.raises(ValidationError, match="frozen"):
        spec.run_id = "x"  # type: ignore[misc]
    data = json.loads(spec.to_json())
    data["workload"]["config"]["batch_size"] = 999
    with pytest.raises(ConfigError, match="max_batch_size"):
        RunSpec.from_json(json.dumps(data))
    data = json.loads(spec.to_json())
    data["surprise"] = 1
    with pytest.raises(ConfigError, match="unknown key 'surprise'"):
        RunSpec.from_json(json.dumps(data))


def test_runspec_missing_everywhere():
    with pytest.raises(ConfigError, match="no RunSpec"):
        RunSpec.load()


def test_run_ids_are_unique_and_valid():
    ids = {new_run_id("Oracle Rauru/Cloud") for _ in range(50)}
    assert len(ids) == 50
    make_spec()  # validates the pattern
    assert all(i.startswith("oracle-rauru-cloud-") for i in ids)


def _ckpt(root, step, files):
    d = root / checkpoint_name(step)
    d.mkdir(parents=True)
    for name, data in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    return d


def test_manifest_written_last_and_verified(tmp_path):
    d = _ckpt(tmp_path, 10, {"a.bin": b"x" * 1000, "sub/b.json": b"{}"})
    assert verify_dir(d)  # no manifest yet: partial
    write_manifest(d, step=10)
    m = read_manifest(d)
    assert [f["path"] for f in m["files"]] == ["a.bin", "sub/b.json"] and m["step"] == 10
    assert verify_dir(d) == []
    (d / "a.bin").write_bytes(b"x" * 999)
    assert "size 999 != 1000" in verify_dir(d)[0]
    (d / "a.bin").write_bytes(b"y" * 1000)
    assert "sha256 mismatch" in verify_dir(d)[0]


def test_latest_complete_skips_partial_and_corrupt(tmp_path):
    good = _ckpt(tmp_path, 10, {"w": b"1"})
    write_manifest(good)
    corrupt = _ckpt(tmp_path, 20, {"w": b"2"})
    write_manifest(corrupt)
    (corrupt / "w").write_bytes(b"22")
    _ckpt(tmp_path, 30, {"w": b"3"})  # never got a manifest
    assert latest_complete(tmp_path) == good
    (tmp_path / "step-00000040").mkdir()
    (tmp_path / "step-00000040" / "manifest.json").write_text("{not json")
    assert latest_complete(tmp_path) == good
    assert latest_complete(tmp_path / "missing") is None


def test_manifest_digest_ignores_creation_time(tmp_path):
    d = _ckpt(tmp_path, 1, {"x": b"abc"})
    m1, m2 = build_manifest(d), build_manifest(d)
    m2["created"] = "1999-01-01T00:00:00+00:00"
    assert manifest_digest(m1) == manifest_digest(m2)
    os.utime(d / "x", (0, 0))
    assert manifest_digest(build_manifest(d)) == manifest_digest(m1)


def test_manifest_rejects_path_traversal(tmp_path):
    d = tmp_path / "step-00000001"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps(
        {"version": 1, "files": [{"path": "../../etc/passwd", "size": 1, "sha256": "0"}]}))
    assert read_manifest(d) is None
