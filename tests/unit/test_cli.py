"""The CLI as a user runs it: real subprocesses of the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "transformers", "peft", "deepspeed", "boto3", "botocore", "docker", "runpod")


def run(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "trainpod", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=60)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["list", "presets"], ["list", "hardware", "--json"], ["show", "smoke"], ["validate", "--all"],
     ["launch", "smoke", "--remote", "local", "--dry-run"]],
)
def test_light_commands_import_no_heavy_modules(argv):
    code = textwrap.dedent(f"""
        import sys
        from trainpod.commands import main
        try:
            main({argv!r})
        except SystemExit as e:
            assert not e.code, e.code
        heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))
        print("HEAVY=" + ",".join(heavy), file=sys.stderr)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY=\n" in out.stderr or out.stderr.rstrip().endswith("HEAVY="), out.stderr


def test_help_lists_commands_without_importing_them():
    code = ("import sys\nfrom trainpod.commands import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('trainpod')), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "launch" in out.stdout and "validate" in out.stdout
    loaded = out.stderr
    assert "trainpod.commands.launch" not in loaded and "pydantic" not in loaded
    assert "trainpod.config" not in loaded


def test_list_json_and_table():
    out = run("list", "presets", "--json")
    assert out.returncode == 0, out.stderr
    names = [r["name"] for r in json.loads(out.stdout)]
    assert {"smoke", "oracle-rauru-cloud", "oracle-rauru-a100", "oracle-rauru-mac", "oracle-rauru-cpu"} <= set(names)
    table = run("list", "experts")
    assert "oracle-sheik-debugger" in table.stdout and "builtin:tiny-qwen2" in table.stdout


def test_show_redacts_secrets_and_applies_env_override():
    out = run("show", "smoke", "--json",
              env={"RUNPOD_API_KEY": "rp-canary-show", "TRAINPOD_TRAINING__LEARNING_RATE": "0.001"})
    assert out.returncode == 0, out.stderr
    assert "rp-canary-show" not in out.stdout + out.stderr
    view = json.loads(out.stdout)
    assert view["settings"]["runpod_api_key"] == "***"
    assert view["training"]["hyperparameters"]["learning_rate"] == 0.001
    assert view["derived"]["effective_batch_size"] == 8


def test_set_flag_beats_env(tmp_path):
    out = run("show", "smoke", "--json", "--set", "learning_rate=0.005",
              env={"TRAINPOD_TRAINING__LEARNING_RATE": "0.001"})
    assert json.loads(out.stdout)["training"]["hyperparameters"]["learning_rate"] == 0.005


def test_bad_input_gives_clear_error_not_traceback(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('[presets.mine]\nexpert = "tiny"\nhardware = "cpu"\ndataset = "sample"\n'
                   'sequence_length = 128\nbach_size = 4\n')
    out = run("--config", str(cfg), "validate", "mine")
    assert out.returncode == 2
    assert "presets.mine.bach_size: unknown key 'bach_size' — did you mean 'batch_size'?" in out.stderr
    assert "Traceback" not in out.stderr
    out = run("show", "smokee")
    assert out.returncode == 2 and "did you mean 'smoke'" in out.stderr and "Traceback" not in out.stderr
    out = run("show", "smoke", "--set", "nonsense")
    assert out.returncode == 2 and "expected KEY=VALUE" in out.stderr


def test_validate_reports_every_invalid_preset(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('[presets.too-big]\nexpert = "tiny"\nhardware = "cpu"\ndataset = "sample"\n'
                   'sequence_length = 128\nbatch_size = 64\n')
    out = run("--config", str(cfg), "validate", "--all")
    assert out.returncode == 2
    assert "ok       smoke" in out.stdout
    assert "invalid  too-big: " in out.stderr and "max_batch_size 16" in out.stderr


def test_launch_dry_run_prints_the_runspec_and_writes_nothing(tmp_path):
    out = run("launch", "smoke", "--remote", "local", "--dry-run", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["backend"] == "local"
    spec = plan["spec"]
    assert spec["workload"]["config"]["preset"] == "smoke" and spec["remote"] == "local"
    assert spec["storage"]["output"].endswith(spec["run_id"])
    assert spec["launch"] == {"launcher": "python", "nproc_per_node": 1, "nnodes": 1, "master_port": 29500}
    assert not (tmp_path / "runs").exists()


def test_shell_completion_for_presets():
    out = subprocess.run(["trainpod"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "_TRAINPOD_COMPLETE": "bash_complete",
                              "COMP_WORDS": "trainpod show oracle-r", "COMP_CWORD": "2"})
    assert "oracle-rauru-cloud" in out.stdout and "smoke" not in out.stdout
    script = run("completion", "bash")
    assert "_TRAINPOD_COMPLETE" in script.stdout


def test_version():
    out = run("--version")
    assert out.returncode == 0 and "0.1.0" in out.stdout


def test_list_jobs_and_pipelines_from_an_overlay(repo_root):
    cfg = str(repo_root / "examples" / "byo-train" / "training.toml")
    jobs = json.loads(run("--config", cfg, "list", "jobs", "--json").stdout)
    assert {"byo-example", "byo-finetune"} <= {j["name"] for j in jobs}
    pipes = json.loads(run("--config", cfg, "list", "pipelines", "--json").stdout)
    assert {"name": "byo-two-stage", "stages": "byo-example -> byo-finetune", "remote": "",
            "description": "train, then fine-tune from the first stage's output"} in pipes
