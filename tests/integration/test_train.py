"""The trainer end to end on CPU: real training of the shipped tiny Qwen2 on the sample dataset.

Every run is a ``python -m trainpod_trainer`` subprocess; one uninterrupted run (``smoke_baseline``)
is shared. Resume tests compare the interrupted-and-resumed run's per-step losses with it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal

import pytest

from tests.fixtures.train import (
    CANARY,
    SMOKE_STEPS,
    read_metrics,
    run_trainer,
    start_trainer,
    wait_for,
    write_spec,
)
from trainpod.manifest import latest_complete, list_checkpoints, verify_dir
from trainpod_trainer.sink import Sink

pytestmark = pytest.mark.train

STOPPED, MEMORY, BAD_INPUT = 3, 4, 2  # trainpod_trainer.exitcodes


def test_training_loss_goes_down(smoke_baseline):
    losses = read_metrics(smoke_baseline)
    assert sorted(losses) == list(range(1, SMOKE_STEPS + 1))
    first = sum(losses[s] for s in range(1, 6)) / 5
    last = sum(losses[s] for s in range(SMOKE_STEPS - 4, SMOKE_STEPS + 1)) / 5
    assert last < first - 0.2, (first, last)
    meta = json.loads((smoke_baseline / "metadata.json").read_text())
    best = json.loads((smoke_baseline / "best" / "best.json").read_text())
    assert best["val_loss"] == meta["best_val_loss"] <= meta["final_val_loss"]


def test_outputs_layout_and_metadata_fields(smoke_baseline):
    out = smoke_baseline
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "metadata.json", "status.json", "DONE", "run_spec.json", "logs/train.log", "logs/metrics.jsonl"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert not verify_dir(out / "best")
    # keep_checkpoints = 2 of the checkpoints at steps 10 and 20 (the end writes final outputs instead)
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [20, 10]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["schema_version"] == 1
    # the format of ../shared/metadata-format.md, which the tools indexing trained experts read
    assert meta["expert"] == {"name": "Tiny (test model shipped with trainpod)", "role": "assembler",
                              "group": "test", "specialization": meta["expert"]["specialization"], "id": "tiny"}
    assert meta["expert"]["specialization"].startswith("smoke tests: a 2-layer Qwen2")
    assert meta["model"] == {"base": "builtin:tiny-qwen2", "finetune": "lora", "lora_rank": 4, "lora_alpha": 8}
    training = meta["training"]
    assert set(training) >= {"dataset", "num_samples", "num_epochs", "batch_size", "gradient_accumulation",
                             "learning_rate", "sequence_length", "duration_seconds", "duration_minutes"}
    spec = json.loads((out / "run_spec.json").read_text())
    assert training["dataset"] == spec["storage"]["dataset"] and training["dataset"].endswith("/data/sample")
    assert training["dataset_name"] == "sample"
    assert training["num_samples"] > 100 and training["steps"] == SMOKE_STEPS
    assert training["batch_size"] == 8 and training["sequence_length"] == 256 and training["learning_rate"] == 1e-2
    assert training["gradient_accumulation"] == 1 and training["num_epochs"] == 1
    assert math.isclose(training["duration_minutes"], training["duration_seconds"] / 60, abs_tol=1e-3)
    assert training["duration_seconds"] > 0
    assert meta["hardware"] == {"name": "Generic CPU (x86-64 / arm64)", "profile": "cpu", "device": "cpu",
                                "fp16": False, "bf16": False}
    from datetime import datetime

    assert datetime.fromisoformat(meta["metadata"]["created"]).tzinfo is not None
    assert meta["metadata"]["git_commit"] == "0123abcd" and meta["metadata"]["created"]
    assert meta["run_id"] == "baseline-run" and meta["image"] == "trainpod:test"
    assert meta["dataset_manifest_sha256"] == "ab" * 32
    assert meta["tokens_per_second"] > 0 and meta["peak_memory_mb"] > 0
    assert 0 < meta["best_val_loss"] < 10 and 0 < meta["final_val_loss"] < 10
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "succeeded" and status["step"] == SMOKE_STEPS and status["exit_code"] == 0
    # how long it trained, for `runs status` of a finished run (docker reads it from here)
    assert status["elapsed_s"] == pytest.approx(training["duration_seconds"], abs=0.06)


def test_secrets_never_written(smoke_baseline):
    for path in smoke_baseline.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for value in CANARY.values():
                assert value.encode() not in data, f"{value} leaked into {path}"


def test_error_messages_are_redacted(tmp_path):
    """A secret value inside an error (here: in the base model path) is logged as ***."""
    secret = CANARY["HF_TOKEN"]
    out = tmp_path / "out"
    spec = write_spec(out, "bad-model", expert={"base_model": f"/nonexistent/{secret}/model"})
    res = run_trainer(spec)
    assert res.returncode == BAD_INPUT
    log = (out / "logs" / "train.log").read_text()
    assert "cannot load tokenizer" in log and "/nonexistent/***/model" in log
    assert secret not in log and secret not in res.stdout + res.stderr
    assert json.loads((out / "status.json").read_text())["state"] == "failed"


def test_done_marker_skips_training(smoke_baseline, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(smoke_baseline, out)
    before = (out / "logs" / "metrics.jsonl").read_text()
    res = run_trainer(write_spec(out, "baseline-run"))
    assert res.returncode == 0
    assert "already finished" in res.stderr
    assert (out / "logs" / "metrics.jsonl").read_text() == before


def _assert_resumed_like_baseline(out, baseline, resumed_from: int) -> None:
    got, want = read_metrics(out), read_metrics(baseline)
    assert max(got) == SMOKE_STEPS and (out / "DONE").is_file()
    k1 = resumed_from + 1
    assert got[k1] == pytest.approx(want[k1], rel=1e-6, abs=1e-6), (k1, got[k1], want[k1])
    for step in range(k1, SMOKE_STEPS + 1):
        assert got[step] == pytest.approx(want[step], rel=1e-5, abs=1e-5), step


def test_resume_after_sigterm_matches_uninterrupted_run(smoke_baseline, tmp_path):
    out = tmp_path / "out"
    spec = write_spec(out, "baseline-run")
    proc = start_trainer(spec)
    wait_for(lambda: (out / "logs" / "metrics.jsonl").is_file()
             and len(read_metrics(out)) >= 13, timeout=120, proc=proc)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == STOPPED, log
    stopped_at = max(read_metrics(out))
    assert 13 <= stopped_at < SMOKE_STEPS
    latest = latest_complete(out / "checkpoints")
    assert latest is not None and latest.name == f"step-{stopped_at:08d}"
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "stopped" and status["exit_code"] == STOPPED and status["step"] == stopped_at

    res = run_trainer(spec)
    assert res.returncode == 0, res.stderr
    assert f"resumed from {latest}" in res.stderr
    _assert_resumed_like_baseline(out, smoke_baseline, stopped_at)


def test_resume_after_kill9_uses_last_complete_checkpoint(smoke_baseline, tmp_path):
    out = tmp_path / "out"
    spec = write_spec(out, "baseline-run")
    proc = start_trainer(spec)
    wait_for(lambda: (out / "checkpoints" / "step-00000010" / "manifest.json").is_file(), timeout=120, proc=proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "DONE").exists()
    latest = latest_complete(out / "checkpoints")
    assert latest is not None
    resumed_from = int(latest.name.split("-")[1])

    res = run_trainer(spec)
    assert res.returncode == 0, res.stderr
    assert f"resumed from {latest}" in res.stderr
    _assert_resumed_like_baseline(out, smoke_baseline, resumed_from)


def test_partial_checkpoint_is_never_resumed(smoke_baseline, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(smoke_baseline / "checkpoints", out / "checkpoints")
    # step 20 loses its manifest (a crash mid-write); a fake step 25 never got one
    (out / "checkpoints" / "step-00000020" / "manifest.json").unlink()
    shutil.copytree(out / "checkpoints" / "step-00000010", out / "checkpoints" / "step-00000025")
    (out / "checkpoints" / "step-00000025" / "manifest.json").unlink()
    # and a corrupted file in a checkpoint whose manifest exists makes it incomplete too
    shutil.copytree(out / "checkpoints" / "step-00000010", out / "checkpoints" / "step-00000028")
    (out / "checkpoints" / "step-00000028" / "optimizer.pt").write_bytes(b"garbage")
    assert latest_complete(out / "checkpoints").name == "step-00000010"

    res = run_trainer(write_spec(out, "baseline-run"))
    assert res.returncode == 0, res.stderr
    assert "resumed from" in res.stderr and "step-00000010 (step 10" in res.stderr
    _assert_resumed_like_baseline(out, smoke_baseline, 10)


def test_memory_guard_checkpoints_and_stops(tmp_path):
    out = tmp_path / "out"
    res = run_trainer(write_spec(out, "mem-guard", hardware={"ram_percent": 0.5}))
    assert res.returncode == MEMORY, res.stderr
    assert "memory guard: RAM use" in res.stderr and "smaller profile" in res.stderr
    latest = latest_complete(out / "checkpoints")
    assert latest is not None and latest.name == "step-00000001" and not verify_dir(latest)
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "stopped" and status["exit_code"] == MEMORY
    assert not (out / "DONE").exists()


def test_bad_dataset_line_fails_with_file_and_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = json.dumps({"instruction": "What does nop do?", "input": "", "output": "Nothing."})
    (data / "train.jsonl").write_text(f"{good}\n{good}\n{{not json\n")
    (data / "val.jsonl").write_text(f"{good}\n")
    (data / "test.jsonl").write_text(f"{good}\n")
    out = tmp_path / "out"
    spec = write_spec(out, "bad-data")
    text = spec.read_text().replace(json.dumps(str(_sample_dir()))[1:-1], str(data))
    spec.write_text(text)
    res = run_trainer(spec)
    assert res.returncode == BAD_INPUT
    assert f"{data / 'train.jsonl'}:3:" in res.stderr and "on_bad_line" in res.stderr


def _sample_dir():
    from trainpod.config.loader import load_catalog

    return load_catalog(use_cwd=False).datasets["sample"].path


def test_full_finetune_writes_full_weights(tmp_path):
    out = tmp_path / "out"
    res = run_trainer(write_spec(out, "full-ft", finetune="full", max_steps=4, save_steps=2, eval_steps=2,
                                 learning_rate=1e-3))
    assert res.returncode == 0, res.stderr
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (out / "adapter_config.json").exists()
    assert (out / "checkpoints" / "step-00000002" / "model.safetensors").is_file()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["model"]["finetune"] == "full" and meta["model"]["lora_rank"] is None
    assert "trainable (100.00%)" in res.stderr


def test_max_runtime_stops_after_a_checkpoint(tmp_path):
    out = tmp_path / "out"
    res = run_trainer(write_spec(out, "max-runtime", max_runtime_minutes=0.0001))
    assert res.returncode == STOPPED, res.stderr
    assert "max_runtime_minutes = 0.0001 reached at step 1" in res.stderr
    assert latest_complete(out / "checkpoints").name == "step-00000001"
    assert json.loads((out / "status.json").read_text())["exit_code"] == STOPPED


class RecordingSink(Sink):
    """A real Sink (the seam the S3 uploader plugs into) that records what it was handed."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, bool]] = []

    def on_checkpoint(self, path):
        self.events.append(("checkpoint", path.name, not verify_dir(path)))

    def on_finish(self, output_dir):
        self.events.append(("finish", output_dir.name, (output_dir / "DONE").is_file()))


def test_sink_gets_complete_checkpoints_then_finish(tmp_path):
    from trainpod.spec import RunSpec
    from trainpod_trainer.run import train

    out = tmp_path / "out"
    spec = RunSpec.load(write_spec(out, "sink-run", max_steps=4, save_steps=2, eval_steps=4))
    sink = RecordingSink()
    before = signal.getsignal(signal.SIGINT)
    assert train(spec, sink=sink) == 0
    assert sink.events == [("checkpoint", "step-00000002", True), ("finish", "out", True)]
    assert signal.getsignal(signal.SIGINT) is before  # train() leaves the process's handlers as it found them
