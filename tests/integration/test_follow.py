"""Following a local run from the CLI: plain progress lines, and Ctrl-C stops after a checkpoint and says how
to resume (on the screen, not only in the log)."""

from __future__ import annotations

import os
import re
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
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        # A command typed at a terminal gets Ctrl-C; one started in the background by a non-interactive shell
        # (as CI may start pytest) inherits SIGINT ignored, and a CLI rightly keeps ignoring it. Start the CLI
        # as the foreground command it stands for here.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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


def test_on_a_terminal_progress_is_a_live_line_under_the_log(tmp_path: Path) -> None:
    """Under a pseudo-terminal the progress is rich's live line (redrawn in place), not plain [progress] lines."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainpod", "launch", "smoke", "--remote", "local", "--output-dir", str(tmp_path / "r"),
         "--set", "max_steps=6", "--set", "logging_steps=1", "--set", "eval_steps=3"],
        stdin=child, stdout=child, stderr=child, close_fds=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TERM": "xterm", "COLUMNS": "160"})
    os.close(child)
    shown, end = b"", time.monotonic() + 240
    try:
        while time.monotonic() < end:
            if select.select([main], [], [], 0.2)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=60) == 0, shown.decode(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)
    text = shown.decode("utf-8", "replace")
    assert "\x1b[" in text  # drawn for a terminal
    assert "[progress]" not in text  # the plain lines are for pipes and CI only
    assert re.search(r"step [1-6]/6 \(\d+%\), loss \d", text), text[-3000:]  # the tracker's live line
    assert "launch plan: smoke on local" in text and "next:" in text
