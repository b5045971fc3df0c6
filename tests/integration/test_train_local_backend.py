"""``--remote local`` end to end: the real CLI launches the real trainer as a subprocess.

Covers the flow ``trainpod launch`` relies on (plan → submit → logs(follow) → status → exit code),
cancel (SIGTERM to the process group → checkpoint → "cancelled"), and ``trainpod evaluate``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainpod.backends.local import SPEC_NAME, LocalBackend
from trainpod.errors import UnsupportedError
from trainpod.manifest import latest_complete
from trainpod.runs import RunRegistry
from trainpod.settings import load_settings
from trainpod.spec import RunSpec, StorageURIs, utcnow_iso

pytestmark = pytest.mark.train


def _spec(out: Path, **overrides) -> RunSpec:
    from trainpod.config.loader import load_catalog

    cfg = load_catalog(use_cwd=False).resolve("smoke", overrides)
    return RunSpec(run_id="local-backend-test", created=utcnow_iso(), remote="local", config=cfg,
                   storage=StorageURIs(dataset=cfg.dataset.path, output=str(out)))


def test_plan_is_pure_and_imports_no_torch(tmp_path):
    code = (
        "import sys, json\n"
        "from trainpod.backends.local import LocalBackend\n"
        "from trainpod.config.loader import load_catalog\n"
        "from trainpod.settings import load_settings\n"
        "from trainpod.spec import RunSpec, StorageURIs\n"
        "cfg = load_catalog(use_cwd=False).resolve('smoke')\n"
        f"spec = RunSpec(run_id='plan-test', created='x', remote='local', config=cfg,"
        f" storage=StorageURIs(dataset=cfg.dataset.path, output={str(tmp_path / 'o')!r}))\n"
        "plan = LocalBackend().plan(spec, load_settings())\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'trainpod_trainer') if m in sys.modules]\n"
        "print(json.dumps({'command': plan.command, 'image': plan.image, 'heavy': heavy}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["heavy"] == []
    assert got["image"] is None
    assert got["command"] == [sys.executable, "-m", "trainpod_trainer", "--spec", str(tmp_path / "o" / SPEC_NAME)]
    assert not (tmp_path / "o").exists()  # planning writes nothing


def test_plan_refuses_remote_storage(tmp_path):
    spec = _spec(tmp_path / "o").model_copy(update={"storage": StorageURIs(dataset="s3://b/d", output="s3://b/o")})
    with pytest.raises(UnsupportedError, match="local directory"):
        LocalBackend().plan(spec, load_settings())


def test_cli_launch_smoke_then_evaluate(tmp_path):
    env_out = tmp_path / "runs"
    res = subprocess.run(["trainpod", "launch", "smoke", "--remote", "local", "--output-dir", str(env_out)],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "step 30/30" in res.stdout and "done: 30 steps" in res.stdout
    (out,) = env_out.iterdir()
    assert (out / "DONE").is_file() and (out / "adapter_model.safetensors").is_file()
    handle = RunRegistry(load_settings().state_path).get(out.name)
    assert handle.backend == "local" and Path(handle.output) == out
    st = LocalBackend().status(handle)
    assert st.state == "succeeded" and st.exit_code == 0 and st.step == 30

    ev = subprocess.run(["trainpod", "evaluate", str(out), "--samples", "2", "--json"],
                        capture_output=True, text=True, timeout=180)
    assert ev.returncode == 0, ev.stderr
    report = json.loads(ev.stdout)
    assert report["split"] == "test" and report["records"] > 10 and report["samples"] == 2
    assert 0 < report["loss"] < 10 and report["perplexity"] == pytest.approx(2.718281828 ** report["loss"], rel=1e-3)
    assert 0 <= report["rouge_l"] <= 1 and 0 <= report["bleu"] <= 1
    assert json.loads((out / "eval.json").read_text())["loss"] == report["loss"]


def test_cli_launch_returns_trainer_exit_code(tmp_path):
    res = subprocess.run(["trainpod", "launch", "smoke", "--remote", "local", "--output-dir", str(tmp_path),
                          "--set", "expert.base_model=/nonexistent/model"],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "cannot load tokenizer for base_model '/nonexistent/model'" in res.stdout


def test_cancel_checkpoints_then_cli_resume_finishes(tmp_path):
    backend = LocalBackend()
    settings = load_settings()
    out = tmp_path / "out"
    sets = {"max_steps": 40, "save_steps": 1000, "eval_steps": 1000}
    handle = backend.submit(backend.plan(_spec(out, **sets), settings), settings)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        st = backend.status(handle)
        if st.state == "running" and (st.step or 0) >= 3:
            break
        assert st.state in ("pending", "running"), st
        time.sleep(0.1)
    else:
        pytest.fail("run never got going")
    backend.cancel(handle)
    st = backend.status(handle)
    assert st.state == "cancelled" and st.exit_code == 3, st
    latest = latest_complete(out / "checkpoints")
    assert latest is not None and 3 <= int(latest.name.split("-")[1]) < 40
    assert any("SIGTERM received" in line for line in backend.logs(handle))
    backend.cancel(handle)  # idempotent on a finished run
    assert RunRegistry(settings.state_path).get(handle.run_id).extra["cancelled"] is True

    res = subprocess.run(["trainpod", "launch", "smoke", "--remote", "local", "--resume", handle.run_id,
                          *(f"--set={k}={v}" for k, v in sets.items())],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resumed from {latest}" in res.stdout and "done: 40 steps" in res.stdout
    assert "SIGTERM received" not in res.stdout  # the stream starts where this attempt began
    assert backend.status(RunRegistry(settings.state_path).get(handle.run_id)).state == "succeeded"
