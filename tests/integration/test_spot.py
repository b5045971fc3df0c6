"""Spot-friendly checkpointing: checkpoints on a clock (``checkpoint_every_minutes``), and a stop grace too short
for a new checkpoint keeps the last complete one instead of starting one SIGKILL would cut.

Real ``python -m trainpod_trainer`` subprocesses on the tiny model; the chaos version (docker backend, s3://
output, SIGTERM then SIGKILL 5 s later) is tests/reliability/test_spot_chaos.py.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests.fixtures.train import read_metrics, run_trainer, start_trainer, wait_for, write_spec
from trainpod.manifest import latest_complete, list_checkpoints, verify_dir

pytestmark = pytest.mark.train

STOPPED = 3  # trainpod_trainer.exitcodes.STOPPED


def _written(log: str) -> list[int]:
    return [int(line.split("checkpoint step-")[1][:8]) for line in log.splitlines() if "checkpoint step-" in line
            and " written" in line]


def test_checkpoints_follow_the_clock_when_save_steps_never_comes(tmp_path) -> None:
    out = tmp_path / "out"
    # save_steps beyond the run: without the clock there would be no checkpoint at all
    spec = write_spec(out, "spot-clock", max_steps=40, save_steps=1000, eval_steps=1000, logging_steps=1,
                      keep_checkpoints=50, checkpoint_every_minutes=0.005)
    res = run_trainer(spec, timeout=180, OMP_NUM_THREADS="1")
    assert res.returncode == 0, res.stderr[-2000:]
    steps = _written(res.stderr)
    assert len(steps) >= 2, res.stderr[-2000:]
    assert all(s < 40 for s in steps) and steps == sorted(set(steps))
    kept = list_checkpoints(out / "checkpoints")
    assert sorted(step for step, _ in kept) == steps and all(verify_dir(p) == [] for _, p in kept)


def test_checkpoint_every_minutes_zero_means_steps_only(tmp_path) -> None:
    out = tmp_path / "out"
    spec = write_spec(out, "spot-off", max_steps=12, save_steps=5, eval_steps=1000, logging_steps=1,
                      keep_checkpoints=50, checkpoint_every_minutes=0)
    res = run_trainer(spec, timeout=180, OMP_NUM_THREADS="1")
    assert res.returncode == 0, res.stderr[-2000:]
    assert _written(res.stderr) == [5, 10]


def test_sigterm_with_a_grace_too_short_keeps_the_last_complete_checkpoint(tmp_path) -> None:
    """A 1 ms grace cannot fit a checkpoint write (measured at the last clock checkpoint): the trainer
    stops at once, writes nothing new, and the newest complete checkpoint is the clock's; resuming finishes."""
    from trainpod.spec import RunSpec

    out = tmp_path / "out"
    path = write_spec(out, "spot-short-grace", max_steps=80, save_steps=1000, eval_steps=1000, logging_steps=1,
                      checkpoint_every_minutes=0.01)
    spec = RunSpec.load(path).model_copy(update={"stop_grace_seconds": 0.001})
    spec.write(path)
    proc = start_trainer(path, OMP_NUM_THREADS="1")
    wait_for(lambda: bool(list_checkpoints(out / "checkpoints")) and max(read_metrics(out)) >= 15, timeout=120,
             proc=proc)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=30)
    assert proc.returncode == STOPPED, log[-2000:]
    assert "no time for a new checkpoint" in log, log[-2000:]
    latest = latest_complete(out / "checkpoints")
    assert latest is not None and verify_dir(latest) == []
    last_logged = max(read_metrics(out))
    assert int(latest.name.split("-")[1]) < last_logged  # the stop step was not checkpointed
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "stopped" and status["step"] == int(latest.name.split("-")[1])
    # nothing half-written next to it
    assert all(verify_dir(p) == [] for _, p in list_checkpoints(out / "checkpoints"))

    resumed = run_trainer(spec.model_copy(update={"resume": True}).write(path), timeout=240, OMP_NUM_THREADS="1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {latest}" in resumed.stderr
    assert json.loads((out / "status.json").read_text())["step"] == 80
