"""Confirm before spending: a paid launch without a terminal and without --yes rents nothing.

The CLI runs as a subprocess (stdin is not a terminal) against the loopback fake RunPod API; the fake records
every request it receives, so "nothing rented" means the API saw no request at all, not only no pod.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.runpod, pytest.mark.s3]

OVERLAY = """
[datasets.rauru-asm]
path = "{dataset}"
train = "train.jsonl"
val = "val.jsonl"
test = "test.jsonl"
format = "instruction"
"""


def _launch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainpod", "launch", "oracle-rauru-cloud", "--remote", "runpod",
                           *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          env={**os.environ, **env})


@pytest.fixture
def env(tmp_path, s3, fake_runpod):
    """A launch that passes the preflight (API key set, loopback S3 reachable) and asks. Its dataset was never
    pushed, so a launch that gets past the question fails at the dataset pin: before any image build and
    before any RunPod call."""
    config = tmp_path / "training.toml"
    config.write_text(OVERLAY.format(dataset=s3.uri("datasets/never-pushed")))
    return {"TRAINPOD_CONFIG": str(config), "TRAINPOD_STORAGE_URI": s3.uri("trainpod"),
            "TRAINPOD_REGISTRY": "127.0.0.1:5055", "TRAINPOD_STATE_DIR": str(tmp_path / "state")}


def test_paid_launch_without_a_terminal_or_yes_exits_2_and_rents_nothing(env, fake_runpod):
    res = _launch(env=env)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "there is no terminal to confirm on; nothing was rented" in res.stderr
    assert "pass --yes (or set TRAINPOD_YES=1)" in res.stderr
    assert "launch plan: oracle-rauru-cloud on runpod" in res.stderr  # the summary came first, with the estimate
    assert "about $2.76" in res.stderr
    assert "Traceback" not in res.stderr
    assert fake_runpod.requests == [] and fake_runpod.pods == {}


@pytest.mark.parametrize("how", ["--yes", "TRAINPOD_YES=1"])
def test_yes_skips_the_question(env, fake_runpod, how):
    args, extra = (["--yes"], {}) if how == "--yes" else ([], {"TRAINPOD_YES": "1"})
    res = _launch(*args, env={**env, **extra})
    # past the question: the launch went on to pin the dataset, which was never pushed
    assert "no terminal to confirm on" not in res.stderr, res.stderr
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "datasets/never-pushed" in res.stderr, res.stderr
    assert fake_runpod.requests == [] and fake_runpod.pods == {}  # it never got as far as renting


def test_a_launch_that_cannot_start_fails_before_asking(env, fake_runpod, monkeypatch):
    monkeypatch.delenv("RUNPOD_API_KEY")
    res = _launch(env=env)
    assert res.returncode == 2 and "needs a RunPod API key" in res.stderr, res.stderr
    assert "confirm" not in res.stderr and fake_runpod.requests == []


def test_dry_run_never_asks(env, fake_runpod):
    res = _launch("--dry-run", env=env)
    assert res.returncode == 0, res.stderr
    assert "cost          about $2.76" in res.stdout and fake_runpod.requests == []


def _on_a_terminal(args: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """Run ``trainpod launch`` with a pseudo-terminal as stdin/stdout/stderr, answer the question, return
    (exit code, everything shown)."""
    import pty
    import select
    import time

    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "trainpod", "launch", "oracle-rauru-cloud", "--remote", "runpod",
                             *args], stdin=child, stdout=child, stderr=child, env={**os.environ, **env, "TERM": "xterm"},
                            close_fds=True)
    os.close(child)
    shown, answered, end = b"", False, time.monotonic() + 60
    try:
        while time.monotonic() < end:
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # the child closed the terminal
                    break
                shown += chunk
            if not answered and b"Rent it?" in shown:
                os.write(main, answer)
                answered = True
            if proc.poll() is not None and not ready:
                break
        return proc.wait(timeout=30), shown.decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(main)


def test_on_a_terminal_it_asks_and_no_means_nothing_rented(env, fake_runpod):
    code, shown = _on_a_terminal([], env, b"n\n")
    assert "Rent it? about $2.76, stopped at max runtime 240 min, max cost $5.00" in shown, shown
    assert "NVIDIA GeForce RTX 4090" in shown and "CUDA floor" in shown  # the summary, as a table
    assert code == 2 and "not launched: nothing was rented" in shown
    assert fake_runpod.requests == [] and fake_runpod.pods == {}


def test_a_pipeline_with_paid_stages_asks_once_for_the_total(env, fake_runpod, tmp_path):
    config = tmp_path / "training.toml"
    config.write_text(config.read_text() + '\n[pipelines.two]\nstages = ["oracle-rauru-cloud", "oracle-rauru-a100"]\n'
                      'remote = "runpod"\n')
    res = subprocess.run([sys.executable, "-m", "trainpod", "pipeline", "run", "two"], capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL, env={**os.environ, **env})
    assert res.returncode == 2, res.stdout + res.stderr
    assert "launch plan: oracle-rauru-cloud on runpod" in res.stderr
    assert "launch plan: oracle-rauru-a100 on runpod" in res.stderr
    # $2.76 (4 h of one RTX 4090) + the A100 stage's estimate, with each stage's caps
    a100 = re.search(r"launch plan: oracle-rauru-a100.*?cost +about \$([\d.]+)", res.stderr, re.S)
    assert a100 is not None
    total = round(2.76 + float(a100.group(1)), 2)
    assert f"rents paid hardware (about ${total:.2f}; oracle-rauru-cloud on runpod: max runtime 240 min" in res.stderr
    assert "pass --yes (or set TRAINPOD_YES=1)" in res.stderr
    assert fake_runpod.requests == [] and fake_runpod.pods == {}
