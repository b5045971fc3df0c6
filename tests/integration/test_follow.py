"""Following a local run from the CLI: plain progress lines, and Ctrl-C stops after a checkpoint and says how
to resume (on the screen, not only in the log)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.train]


def test_ctrl_c_stops_after_a_checkpoint_and_prints_the_resume_command(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainpod", "launch", "smoke", "--remote", "local", "--output-dir", str(out),
         "--set", "max_steps=2000", "--set", "save_steps=2", "--set", "logging_steps=1", "--set", "eval_steps=1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        end = time.monotonic() + 240
        while not list(out.glob("*/checkpoints/step-*/manifest.json")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "no checkpoint within 240 s"
            time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the CLI (the trainer runs in its own session)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = out.iterdir()
    run_id = run_dir.name
    complete = sorted(p.parent.name for p in run_dir.glob("checkpoints/step-*/manifest.json"))
    last = int(complete[-1].split("-")[1])
    assert proc.returncode == 3, stdout + stderr  # stopped after a checkpoint
    assert f"run {run_id}: cancelled" in stderr
    assert f"stopped at step {last} after a checkpoint" in stderr, stderr
    assert f"trainpod launch smoke --remote local --resume {run_id}" in stderr
    assert f"trainpod runs report {run_id}" in stderr
    assert "[progress] step " in stdout  # plain progress lines when not on a terminal
    assert "\x1b" not in stdout + stderr
