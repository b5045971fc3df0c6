"""Bring your own training code: the example project under examples/byo-train runs as [jobs.*] through the real
launcher and supervisor (real subprocesses, real signals, loopback S3) — locally here, in Docker in test_byo_docker.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from trainpod import launcher
from trainpod.errors import ConfigError, TrainpodError
from trainpod.manifest import verify_dir

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "byo-train"
EXAMPLE_TOML = EXAMPLE / "training.toml"


def _run(req: launcher.LaunchRequest) -> tuple[launcher.Prepared, object, list[str]]:
    prep, handle = launcher.submit(launcher.prepare(req))
    lines = list(launcher.follow(prep.backend, handle))
    return prep, handle, lines


@pytest.mark.s3
def test_job_pulls_s3_data_runs_locally_and_mirrors_outputs_to_s3(s3, tmp_path, monkeypatch):
    from trainpod import storage

    storage.sync_up(EXAMPLE / "data", s3.uri("datasets/xy"))
    toml = tmp_path / "training.toml"
    toml.write_text(EXAMPLE_TOML.read_text().replace('data = "data"', f'data = "{s3.uri("datasets/xy")}"')
                    .replace('project_dir = "."', f'project_dir = "{EXAMPLE}"'))
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", s3.uri("team"))
    prep, handle, lines = _run(launcher.LaunchRequest(preset="byo-example", config=str(toml),
                                                      output_dir=str(tmp_path / "runs")))
    status = prep.backend.status(handle)
    assert status.state == "succeeded", lines
    out = Path(handle.output)
    model = json.loads((out / "model.json").read_text())
    assert model["step"] == 40 and abs(model["w"] - 2.0) < 1.5  # it learned something from the data dir
    assert (out / "DONE").is_file()
    assert not verify_dir(out / "checkpoints" / "step-00000040")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000035", "step-00000040"]  # keep_last

    remote = s3.uri(f"team/runs/{handle.run_id}")
    store = storage.open_store(remote)
    listed = store.list()
    assert {"model.json", "DONE", "checkpoints/step-00000040/state.json",
            "checkpoints/step-00000040/manifest.json", "logs/train.log"} <= set(listed)
    assert storage.latest_complete_checkpoint(remote + "/checkpoints") == remote + "/checkpoints/step-00000040"
    assert json.loads(store.read_bytes("model.json")) == model
    assert handle.extra["sync_uri"] == remote and handle.preset == "byo-example"
    assert f"pulled {s3.uri('datasets/xy')}" in (out / "logs" / "launcher.log").read_text()


def _slow_job_toml(tmp_path: Path, steps: int = 60) -> Path:
    toml = tmp_path / "training.toml"
    toml.write_text(f"""
[jobs.slow]
hardware = "cpu"
project_dir = "{EXAMPLE}"
command = ["python", "train.py", "--steps", "{steps}", "--save-every", "5", "--step-seconds", "0.05"]
data = "{EXAMPLE / 'data'}"
stop_grace_seconds = 20
""")
    return toml


def test_cancel_checkpoints_then_resume_continues(tmp_path):
    toml = _slow_job_toml(tmp_path)
    req = launcher.LaunchRequest(preset="slow", config=str(toml), output_dir=str(tmp_path / "runs"))
    prep, handle = launcher.submit(launcher.prepare(req))
    ckpts = Path(handle.output) / "checkpoints"
    deadline = time.monotonic() + 30
    while not (ckpts / "step-00000010" / "manifest.json").exists():
        assert time.monotonic() < deadline, "no checkpoint within 30s"
        assert prep.backend.status(handle).state in ("pending", "running")
        time.sleep(0.05)
    prep.backend.cancel(handle)  # SIGTERM: the script checkpoints at the step it is on, exits 3
    status = prep.backend.status(handle)
    assert status.state == "cancelled" and status.exit_code == 3, status
    stopped = json.loads((Path(handle.output) / "status.json").read_text())
    assert stopped["exit_code"] == 3 and not (Path(handle.output) / "DONE").exists()
    last = max(int(p.name[5:]) for p in ckpts.iterdir() if not verify_dir(p))
    assert 10 <= last < 60

    prep2, handle2, lines = _run(launcher.LaunchRequest(preset="slow", config=str(toml), resume=handle.run_id,
                                                        output_dir=str(tmp_path / "runs")))
    assert handle2.run_id == handle.run_id and handle2.output == handle.output
    assert prep2.backend.status(handle2).state == "succeeded", lines
    assert any(f"start at step {last} (resume: step-{last:08d}" in line for line in lines), lines
    model = json.loads((Path(handle.output) / "model.json").read_text())
    assert model["step"] == 60 and model["resumed_from"] == f"step-{last:08d}"
    steps = [json.loads(line)["step"] for line in (Path(handle.output) / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))  # every step exactly once: nothing lost, nothing trained twice


def test_two_stage_pipeline_feeds_stage_one_output_to_stage_two(tmp_path):
    from trainpod.pipeline import plan_pipeline, run_pipeline
    from trainpod.runs import RunRegistry
    from trainpod.settings import load_settings

    kw = {"config": str(EXAMPLE_TOML), "output_dir": str(tmp_path / "runs")}
    dry = plan_pipeline("byo-two-stage", **kw).display()
    assert [s["stage"] for s in dry["stages"]] == ["byo-example", "byo-finetune"]
    planned_first = dry["stages"][0]["plan"]["spec"]["storage"]["output"]
    assert dry["stages"][1]["plan"]["spec"]["init_from"] == planned_first

    lines: list[str] = []
    results = run_pipeline(plan_pipeline("byo-two-stage", **kw), on_line=lines.append)
    assert [(name, st.state) for name, _, st in results] == [("byo-example", "succeeded"),
                                                              ("byo-finetune", "succeeded")]
    (_, first, _), (_, second, _) = results
    stage2 = json.loads((Path(second.output) / "model.json").read_text())
    assert stage2["initialised_from"] == first.output and stage2["step"] == 10
    registry = RunRegistry(load_settings().state_path)
    rec = registry.get(second.run_id).extra
    assert rec["pipeline"] == "byo-two-stage" and rec["stage"] == "byo-finetune"
    assert rec["stages"] == ["byo-example", "byo-finetune"] and rec["previous_output"] == first.output

    # --from the second stage: reuses the newest successful first stage, runs only the second
    again = plan_pipeline("byo-two-stage", from_stage="byo-finetune", **kw)
    assert again.skipped == ["byo-example"] and again.previous_output == first.output
    ((name, third, st),) = run_pipeline(again, on_line=lines.append)
    assert st.state == "succeeded"
    assert json.loads((Path(third.output) / "model.json").read_text())["initialised_from"] == first.output


def test_pipeline_errors_name_the_table_and_stage(tmp_path):
    from trainpod.pipeline import plan_pipeline

    toml = tmp_path / "training.toml"
    toml.write_text('[pipelines.bad]\nstages = ["byo-exampel"]\n')
    with pytest.raises(ConfigError, match=r"pipelines\.bad\.stages: 'byo-exampel' is neither"):
        plan_pipeline("bad", config=str(toml))
    with pytest.raises(ConfigError, match="--from nope: not a stage"):
        plan_pipeline("byo-two-stage", config=str(EXAMPLE_TOML), from_stage="nope")


def test_max_runtime_stops_the_job_after_a_checkpoint(tmp_path):
    toml = _slow_job_toml(tmp_path, steps=400)
    prep, handle, lines = _run(launcher.LaunchRequest(preset="slow", config=str(toml), max_runtime_minutes=0.03,
                                                      output_dir=str(tmp_path / "runs")))
    status = prep.backend.status(handle)
    assert status.state == "preempted" and status.exit_code == 3, (status, lines)
    assert any(line.startswith("stopping at step") for line in lines), lines
    ckpts = Path(handle.output) / "checkpoints"
    assert any(not verify_dir(p) for p in ckpts.iterdir()) and not (Path(handle.output) / "DONE").exists()
    assert "max_runtime_minutes reached" in (Path(handle.output) / "logs" / "launcher.log").read_text()


def test_mixed_pipeline_plans_pass_outputs_between_presets_and_jobs(tmp_path):
    from trainpod.contract import ENV_PREVIOUS_OUTPUT as PREVIOUS_ENV
    from trainpod.pipeline import plan_pipeline

    toml = tmp_path / "training.toml"
    toml.write_text(EXAMPLE_TOML.read_text().replace('project_dir = "."', f'project_dir = "{EXAMPLE}"')
                    .replace('data = "data"', f'data = "{EXAMPLE / "data"}"')
                    + '\n[pipelines.mixed]\nstages = ["smoke", "byo-finetune", "smoke-ddp"]\n')
    plan = plan_pipeline("mixed", config=str(toml), output_dir=str(tmp_path / "runs"), remote="local")
    preset1, job, preset2 = (s.prepared for s in plan.stages)
    assert [s.kind for s in plan.stages] == ["preset", "job", "preset"]
    assert PREVIOUS_ENV not in preset1.plan.env
    assert job.spec.init_from == preset1.spec.storage.output
    assert preset2.plan.env[PREVIOUS_ENV] == job.spec.storage.output
    assert preset1.spec.init_from is None and preset2.spec.init_from == job.spec.storage.output
    assert any(n.startswith(f"init_from {job.spec.storage.output}") for n in preset2.plan.notes)


@pytest.mark.s3
def test_a_job_whose_outputs_cannot_reach_s3_is_not_done(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", f"s3://{s3.bucket}-missing/team")  # no such bucket
    req = launcher.LaunchRequest(preset="byo-example", config=str(EXAMPLE_TOML), output_dir=str(tmp_path / "runs"))
    # A launch checks S3 first and refuses before anything runs ...
    prep = launcher.prepare(req)
    with pytest.raises(TrainpodError, match="does not exist"):
        launcher.submit(prep)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    # ... and a job whose outputs stop reaching S3 after that check (the bucket gone mid-run) is never DONE.
    prep, handle = launcher.submit(launcher.prepare(req), preflighted=True)
    list(launcher.follow(prep.backend, handle))  # to the end
    status = prep.backend.status(handle)
    out = Path(handle.output)
    assert (out / "model.json").is_file() and not (out / "DONE").exists()  # trained, but not safely stored
    assert status.state == "failed" and status.exit_code == 1, status
    assert "final sync to s3://" in json.loads((out / "status.json").read_text())["reason"]


@pytest.mark.s3
def test_a_running_jobs_log_reaches_s3_between_full_syncs(s3, tmp_path, monkeypatch):
    """`runs logs -f` on a remote job reads logs/train.log from S3: it goes up every few seconds while the job
    runs, not only with the (slower) full mirror of the output dir."""
    from trainpod import storage

    project = tmp_path / "proj"
    project.mkdir()
    (project / "wait.py").write_text(
        "import os, pathlib, time\n"
        "print('hello from the job', flush=True)\n"
        "go = pathlib.Path(os.environ['TRAINPOD_OUTPUT_DIR']) / 'go'\n"
        "end = time.monotonic() + 60\n"
        "while not go.exists() and time.monotonic() < end:\n"
        "    time.sleep(0.1)\n"
        "print('bye', flush=True)\n")
    toml = tmp_path / "training.toml"
    toml.write_text(f'[jobs.waiter]\nhardware = "cpu"\nproject_dir = "{project}"\ncommand = ["python", "wait.py"]\n')
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", s3.uri("team"))
    monkeypatch.setenv("TRAINPOD_SYNC_INTERVAL", "3600")  # no full mirror round while the job runs
    monkeypatch.setenv("TRAINPOD_LOG_SYNC_INTERVAL", "0.5")
    req = launcher.LaunchRequest(preset="waiter", config=str(toml), output_dir=str(tmp_path / "runs"))
    prep, handle = launcher.submit(launcher.prepare(req))
    remote = s3.uri(f"team/runs/{handle.run_id}")
    try:
        deadline = time.monotonic() + 30
        while b"hello from the job" not in (storage.read_bytes(remote + "/logs/train.log") or b""):
            assert time.monotonic() < deadline, "the job's log did not reach S3 while it ran"
            time.sleep(0.2)
        assert prep.backend.status(handle).state == "running"
        assert json.loads(storage.read_bytes(remote + "/status.json"))["state"] == "running"
        assert storage.read_bytes(remote + "/DONE") is None
    finally:
        (Path(handle.output) / "go").touch()
    lines = list(launcher.follow(prep.backend, handle))
    assert prep.backend.status(handle).state == "succeeded", lines
    assert b"bye" in storage.read_bytes(remote + "/logs/train.log")  # the final sync has the whole log
    assert storage.read_bytes(remote + "/DONE") is not None


def test_a_torchrun_job_stopped_after_a_checkpoint_exits_3_not_1(tmp_path):
    """A job with launcher = "torchrun" runs under the trainer's launch wrapper: SIGTERM reaches the script once,
    it checkpoints and exits 3 (contrib.finish records it), and the run reads as stopped-after-a-checkpoint,
    where torchrun alone would have reported a crash (1)."""
    toml = tmp_path / "training.toml"
    toml.write_text(f"""
[jobs.ddp-slow]
hardware = "cpu"
project_dir = "{EXAMPLE}"
command = ["python", "train.py", "--steps", "400", "--save-every", "5", "--step-seconds", "0.05"]
data = "{EXAMPLE / 'data'}"
launcher = "torchrun"
nproc_per_node = 1
stop_grace_seconds = 30
""")
    req = launcher.LaunchRequest(preset="ddp-slow", config=str(toml), output_dir=str(tmp_path / "runs"))
    prep, handle = launcher.submit(launcher.prepare(req))
    ckpts = Path(handle.output) / "checkpoints"
    deadline = time.monotonic() + 90
    while not (ckpts / "step-00000010" / "manifest.json").exists():
        assert time.monotonic() < deadline, "no checkpoint within 90s"
        assert prep.backend.status(handle).state in ("pending", "running")
        time.sleep(0.1)
    prep.backend.cancel(handle)
    status = prep.backend.status(handle)
    assert status.state == "cancelled" and status.exit_code == 3, status
    log = (Path(handle.output) / "logs" / "launcher.log").read_text()
    assert "trainpod_trainer.launch" in log and "stopped after a checkpoint" in log
