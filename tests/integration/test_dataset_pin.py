"""A resumed run trains on the data it was pinned to, or is refused (exit 2) naming what changed.

Local datasets: the real CLI (`trainpod launch ... --resume`) against a run stopped by --max-runtime.
s3:// datasets: the launcher's public functions (prepare + pin_dataset, as `launch` calls them at submit)
against the loopback moto server, since --remote local does not read s3:// datasets.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from trainpod import launcher, storage
from trainpod.backends.base import RunHandle
from trainpod.config import load_catalog
from trainpod.errors import TrainpodError
from trainpod.runs import RunRegistry
from trainpod.settings import load_settings

SAMPLE = Path(load_catalog(use_cwd=False).datasets["sample"].path)  # the shipped sample dataset


def _overlay(tmp_path: Path, dataset: str) -> Path:
    cfg = tmp_path / "training.toml"
    cfg.write_text(f"""
[datasets.pinned-data]
path = "{dataset}"
format = "instruction"

[presets.pinned]
expert = "tiny"
hardware = "cpu"
dataset = "pinned-data"
hyperparameters = "smoke"
lora = "minimal"
sequence_length = 128
batch_size = 4
""")
    return cfg


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["trainpod", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.train
def test_resume_on_an_edited_local_dataset_is_refused_naming_the_file(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    cfg = _overlay(tmp_path, str(data))
    out_root = tmp_path / "runs"
    # stopped right after its first checkpointed step: a run that --resume would continue
    res = _cli("--config", str(cfg), "launch", "pinned", "--remote", "local", "--output-dir", str(out_root),
               "--max-runtime", "0.001", "--set", "save_steps=1")
    assert res.returncode == 3, res.stdout + res.stderr
    (out,) = out_root.iterdir()
    record = RunRegistry(load_settings().state_path).path(out.name)
    pin = json.loads(record.read_text())["extra"]["dataset_pin"]
    assert pin["uri"] == str(data) and set(pin["files"]) == {"train.jsonl", "val.jsonl", "test.jsonl"}

    train = data / "train.jsonl"
    text = train.read_text()
    train.write_text(text.replace("a", "b", 1))  # one byte, same size
    (data / "extra.jsonl").write_text('{"instruction": "x", "output": "y"}\n')
    before = {p: p.read_bytes() for p in [record, *sorted(out.rglob("*"))] if p.is_file()}
    res = _cli("--config", str(cfg), "launch", "pinned", "--remote", "local", "--resume", out.name)
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"--resume {out.name}: dataset 'pinned-data' at {data} changed since the run started" in res.stderr
    assert "train.jsonl (modified)" in res.stderr and "extra.jsonl (added)" in res.stderr
    assert "val.jsonl" not in res.stderr  # only what changed is named
    assert "trainpod launch pinned` (without --resume)" in res.stderr
    assert "Traceback" not in res.stderr and "submitted" not in res.stderr
    # nothing started, nothing rewritten
    assert {p: p.read_bytes() for p in before} == before and not any(p not in before for p in out.rglob("*")
                                                                     if p.is_file())

    # put the data back as it was pinned: the run resumes (and keeps its original pin)
    train.write_text(text)
    (data / "extra.jsonl").unlink()
    res = _cli("--config", str(cfg), "launch", "pinned", "--remote", "local", "--resume", out.name,
               "--set", "max_steps=3")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resumed from" in res.stdout
    assert json.loads(record.read_text())["extra"]["dataset_pin"] == pin


@pytest.mark.s3
def test_resume_on_a_repushed_s3_dataset_is_refused_naming_the_file(s3, tmp_path, monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(SAMPLE, src)
    uri = s3.uri("datasets/pinned")
    storage.sync_up(src, uri)
    cfg = _overlay(tmp_path, uri)
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", s3.uri("outputs"))
    req = launcher.LaunchRequest(preset="pinned", remote="docker", config=str(cfg))
    first = launcher.pin_dataset(launcher.prepare(req))
    assert first.dataset_pin is not None and first.dataset_pin["uri"] == uri
    assert first.spec.dataset_manifest_sha256 == storage.dataset_manifest_digest(uri)
    # the run as submit records it (the docker backend itself is not needed to check the pin)
    registry = RunRegistry(load_settings().state_path)
    registry.save(RunHandle(run_id=first.spec.run_id, backend="docker", preset="pinned",
                            output=first.spec.storage.output, created=first.spec.created,
                            extra={"dataset_pin": first.dataset_pin}))

    resumed = launcher.LaunchRequest(preset="pinned", remote="docker", config=str(cfg), resume=first.spec.run_id)
    again = launcher.pin_dataset(launcher.prepare(resumed))  # unchanged data: same pin
    assert again.spec.dataset_manifest_sha256 == first.spec.dataset_manifest_sha256

    val = src / "val.jsonl"
    val.write_bytes(val.read_bytes().replace(b"e", b"E", 1))  # same size, other bytes
    (src / "test.jsonl").unlink()
    storage.sync_up(src, uri, delete=True)
    with pytest.raises(TrainpodError) as err:
        launcher.pin_dataset(launcher.prepare(resumed))
    assert f"dataset 'pinned-data' at {uri} changed since the run started" in err.value.message
    assert "val.jsonl (modified)" in err.value.message and "test.jsonl (removed)" in err.value.message
    assert "train.jsonl" not in err.value.message
    assert "without --resume" in (err.value.hint or "")
    # a new run (no --resume) pins the current data
    fresh = launcher.pin_dataset(launcher.prepare(req))
    assert fresh.spec.dataset_manifest_sha256 == storage.dataset_manifest_digest(uri) != \
        first.spec.dataset_manifest_sha256


@pytest.mark.s3
def test_a_run_recorded_without_a_pin_is_checked_against_its_specs_digest(s3, tmp_path, monkeypatch):
    """Runs launched before the record kept the pin: the RunSpec in the run's output still has the digest."""
    src = tmp_path / "src"
    shutil.copytree(SAMPLE, src)
    uri = s3.uri("datasets/old")
    storage.sync_up(src, uri)
    cfg = _overlay(tmp_path, uri)
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", s3.uri("outputs"))
    first = launcher.pin_dataset(launcher.prepare(launcher.LaunchRequest(preset="pinned", remote="docker",
                                                                         config=str(cfg))))
    storage.write_bytes(storage.join_uri(first.spec.storage.output, "run_spec.json"), first.spec.to_json().encode())
    RunRegistry(load_settings().state_path).save(RunHandle(
        run_id=first.spec.run_id, backend="docker", preset="pinned", output=first.spec.storage.output,
        created=first.spec.created))
    (src / "train.jsonl").write_text('{"instruction": "new", "output": "data"}\n')
    storage.sync_up(src, uri)
    with pytest.raises(TrainpodError, match="changed since the run started") as err:
        launcher.pin_dataset(launcher.prepare(launcher.LaunchRequest(
            preset="pinned", remote="docker", config=str(cfg), resume=first.spec.run_id)))
    assert first.spec.dataset_manifest_sha256 in err.value.message
