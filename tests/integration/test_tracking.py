"""Optional Weights & Biases tracking, exercised for real in offline mode (no network, files on disk)."""

from __future__ import annotations

import pytest

from tests.fixtures.train import CANARY, run_trainer, write_spec

pytestmark = pytest.mark.train


def test_wandb_offline_run_logs_training_metrics(tmp_path):
    pytest.importorskip("wandb", reason="wandb is an optional tracker: pip install wandb")
    out = tmp_path / "out"
    spec = write_spec(out, run_id="wandb-run", max_steps=4, eval_steps=2, save_steps=4, logging_steps=1)
    proc = run_trainer(spec, WANDB_MODE="offline", WANDB_API_KEY="wandb-canary-0123456789abcdef")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = list((out / "wandb").glob("offline-run-*-wandb-run"))
    assert len(runs) == 1, list((out / "wandb").glob("*"))
    record = (runs[0] / "run-wandb-run.wandb").read_bytes()
    assert b"train/loss" in record and b"eval/loss" in record
    assert b"wandb-canary" not in record  # the key is a secret, never logged
    for canary in CANARY.values():
        assert canary.encode() not in record
    assert (out / "DONE").exists() and list((out / "tensorboard").glob("events.*"))


def test_no_wandb_without_configuration(tmp_path):
    out = tmp_path / "out"
    spec = write_spec(out, run_id="no-wandb", max_steps=2, eval_steps=2, save_steps=2)
    proc = run_trainer(spec)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (out / "wandb").exists()
