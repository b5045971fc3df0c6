"""``trainpod runs list``: duration and cost columns; on a 100-column terminal no name breaks mid-word."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from trainpod.backends.base import RunHandle
from trainpod.runs import RunRegistry

IDS = ["oracle-rauru-4xa100-full-20261128-170318-d8e69b", "oracle-rauru-2x4090-20261128-171501-0a1b2c",
       "smoke-20261128-172000-abcdef"]


def _registry(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    reg = RunRegistry(state)
    for i, run_id in enumerate(IDS):
        out = tmp_path / "runs" / run_id
        out.mkdir(parents=True)
        (out / "status.json").write_text(json.dumps({"state": "succeeded", "step": 30}))
        (out / "DONE").write_text("{}")
        preset = run_id.rsplit("-", 3)[0]
        reg.save(RunHandle(run_id=run_id, backend="local", preset=preset, provider_id="999999", output=str(out),
                           created=f"2026-11-28T17:0{i}:00+00:00", extra={"started": 1_000_000.0 + i}))
    return state


def test_list_json_has_duration_and_cost(tmp_path: Path) -> None:
    state = _registry(tmp_path)
    out = subprocess.run([sys.executable, "-m", "trainpod", "runs", "list", "--json"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "TRAINPOD_STATE_DIR": str(state)})
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["run_id"] for r in rows] == IDS
    assert all(r["state"] == "succeeded" and r["cost"] == "$0" for r in rows)
    assert all(isinstance(r["duration_s"], float) and r["duration"] != "-" for r in rows)


def test_names_never_wrap_mid_word_on_a_100_column_terminal(tmp_path: Path) -> None:
    state = _registry(tmp_path)
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "trainpod", "runs", "list", "--no-status"], stdin=child,
                            stdout=child, stderr=child, close_fds=True,
                            env={**os.environ, "TRAINPOD_STATE_DIR": str(state), "TERM": "xterm", "COLUMNS": "100"})
    os.close(child)
    shown, end = b"", time.monotonic() + 60
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
    proc.wait(timeout=30)
    os.close(main)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode("utf-8", "replace"))
    lines = text.splitlines()
    assert lines and max(len(line) for line in lines) <= 100, text
    for run_id in IDS:  # each whole on one line
        assert any(run_id in line for line in lines), text
    for header in ("duration", "cost"):
        assert header in text
