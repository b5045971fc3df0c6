"""A finished run stays finished: ``launch --resume``, ``runs cancel`` and ``runs status`` on it.

One real ``trainpod launch smoke --remote local`` run (module-scoped, its own state directory) is shared;
every check goes through the real CLI as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.train


def _cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["trainpod", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path, str]:
    """(env with its own TRAINPOD_STATE_DIR, output dir, run id) of a succeeded smoke run."""
    root = tmp_path_factory.mktemp("finished")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINPOD_", "AWS_", "RUNPOD_"))}
    env["TRAINPOD_STATE_DIR"] = str(root / "state")
    res = _cli(env, "launch", "smoke", "--remote", "local", "--output-dir", str(root / "runs"),
               "--set", "max_steps=6", "--set", "save_steps=3", "--set", "eval_steps=3")
    assert res.returncode == 0, res.stdout + res.stderr
    (out,) = (root / "runs").iterdir()
    return env, out, out.name


def _snapshot(*dirs: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def test_resume_of_a_finished_run_is_a_noop_that_says_so(finished):
    env, out, run_id = finished
    state = Path(env["TRAINPOD_STATE_DIR"])
    before = _snapshot(out, state)
    assert any(p.endswith(f"{run_id}.json") for p in before) and (out / "status.json").is_file()
    mtimes = {p: os.stat(p).st_mtime_ns for p in before}
    res = _cli(env, "launch", "smoke", "--remote", "local", "--resume", run_id)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"run {run_id} already finished" in res.stderr and "nothing to resume" in res.stderr
    assert "trainpod launch smoke" in res.stderr  # how to train again
    assert "submitted" not in res.stderr and "step " not in res.stdout
    assert _snapshot(out, state) == before  # status.json, the record's `created`, the log: all byte-identical
    assert {p: os.stat(p).st_mtime_ns for p in before} == mtimes
    res = _cli(env, "launch", "smoke", "--remote", "local", "--resume")  # "latest" finds the same run
    assert res.returncode == 0 and f"run {run_id} already finished" in res.stderr, res.stderr
    assert _snapshot(out, state) == before


def test_cancel_of_a_finished_run_changes_nothing(finished):
    env, out, run_id = finished
    state = Path(env["TRAINPOD_STATE_DIR"])
    before = _snapshot(out, state)
    res = _cli(env, "runs", "cancel", run_id[:-2])  # a unique prefix
    assert res.returncode == 0, res.stderr
    assert f"run {run_id} had already finished (succeeded)" in res.stdout and "cancelled:" not in res.stdout
    assert _snapshot(out, state) == before
    res = _cli(env, "runs", "status", run_id)
    assert json.loads(res.stdout)["state"] == "succeeded"


def test_status_of_a_finished_run_reports_how_long_it_ran(finished):
    env, out, run_id = finished
    record = json.loads((Path(env["TRAINPOD_STATE_DIR"]) / "runs" / f"{run_id}.json").read_text())
    done = json.loads((out / "DONE").read_text())
    first = json.loads(_cli(env, "runs", "status", run_id).stdout)
    time.sleep(2.5)
    second = json.loads(_cli(env, "runs", "status", run_id).stdout)
    assert first["state"] == second["state"] == "succeeded"
    # the run's duration does not grow after it ended, and it is the span from start to DONE
    assert first["elapsed_s"] == second["elapsed_s"]
    from datetime import datetime

    ran = datetime.fromisoformat(done["finished"]).timestamp() - record["extra"]["started"]
    assert abs(second["elapsed_s"] - ran) < 1.5, (second, ran)
    assert second["elapsed_s"] < time.time() - record["extra"]["started"] - 2


def test_evaluate_takes_a_run_id(finished):
    env, out, run_id = finished
    res = _cli(env, "evaluate", run_id, "--samples", "1", "--max-new-tokens", "8", "--json", timeout=180)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["run_id"] == run_id and report["output_dir"] == str(out)
    assert json.loads((out / "eval.json").read_text())["loss"] == report["loss"]
    res = _cli(env, "evaluate", "no-such-run-or-dir")
    assert res.returncode == 2 and "neither a directory nor a known run" in res.stderr, res.stderr


def test_resume_of_a_run_still_going_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINPOD_", "AWS_", "RUNPOD_"))}
    env["TRAINPOD_STATE_DIR"] = str(tmp_path / "state")
    res = _cli(env, "launch", "smoke", "--remote", "local", "--detach", "--output-dir", str(tmp_path / "runs"),
               "--set", "max_steps=100000")
    assert res.returncode == 0, res.stderr
    (out,) = (tmp_path / "runs").iterdir()
    try:
        res = _cli(env, "launch", "smoke", "--remote", "local", "--resume", out.name)
        assert res.returncode == 2, res.stdout + res.stderr
        assert f"--resume {out.name}: the run is still" in res.stderr and f"runs cancel {out.name}" in res.stderr
        assert len(list((tmp_path / "runs").iterdir())) == 1 and "submitted" not in res.stderr
    finally:
        res = _cli(env, "runs", "cancel", out.name)
        assert res.returncode == 0 and f"cancelled: {out.name}" in res.stdout, res.stdout + res.stderr
