"""Optional dependencies: a command that needs a package that is not installed refuses with exit 2 before
anything starts, naming the package and the install command (issue #12).

How a missing package is made real: the CLI runs in a *subprocess* whose ``PYTHONPATH`` starts with
``tests/fixtures/hidden_modules``. Its ``sitecustomize.py`` (imported by Python itself at start-up) swaps the
standard path finder for one that cannot see the packages named in ``HIDE_MODULES``, so in that process
``find_spec`` returns None and ``import`` raises ModuleNotFoundError, exactly as when the package was never
installed. The process boundary is the fake: none of trainpod's functions is patched, and the same test
environment without ``HIDE_MODULES`` shows the commands pass (so it is the missing package they react to).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from trainpod import deps

ROOT = Path(__file__).resolve().parents[2]
HIDER = ROOT / "tests" / "fixtures" / "hidden_modules"


def cli(*argv: str, hide: str = "", cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(HIDER), full.get("PYTHONPATH", "")) if p)
    full["HIDE_MODULES"] = hide
    return subprocess.run([sys.executable, "-m", "trainpod", *argv], capture_output=True, text=True, cwd=cwd,
                          env=full, timeout=120)


def assert_refused(out: subprocess.CompletedProcess, package: str, extra: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert package in out.stderr and f"pip install 'trainpod[{extra}]'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_a_deepspeed_preset_is_refused_by_validate_and_launch_when_deepspeed_is_missing(tmp_path):
    for argv in (["validate", "smoke-zero2"], ["launch", "smoke-zero2", "--remote", "local"]):
        out = cli(*argv, hide="deepspeed", cwd=tmp_path)
        assert_refused(out, "DeepSpeed not installed (no module 'deepspeed')", "deepspeed")
    # nothing started: no output directory, no run recorded
    assert not (tmp_path / "runs").exists()
    assert not list(Path(os.environ["TRAINPOD_STATE_DIR"]).rglob("*.json"))
    # the hiding is all it takes: a preset without DeepSpeed still validates there, and with DeepSpeed visible
    # (the dev extra installs it) smoke-zero2 validates too
    assert cli("validate", "smoke", hide="deepspeed", cwd=tmp_path).returncode == 0
    ok = cli("validate", "smoke-zero2", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("hide", "argv", "env", "package", "extra"),
    [
        ("torch", ["launch", "smoke", "--remote", "local"], {}, "the trainer's packages", "train"),
        ("transformers", ["evaluate", "."], {}, "the trainer's packages", "train"),
        ("wandb", ["launch", "smoke", "--remote", "local"], {"WANDB_MODE": "offline"}, "wandb", "tracking"),
        ("docker", ["launch", "oracle-rauru-cpu", "--remote", "docker"], {}, "the docker SDK", "docker"),
        ("docker", ["validate", "oracle-rauru-cpu"], {}, "the docker SDK", "docker"),
        ("runpod", ["launch", "oracle-rauru-cloud", "--remote", "runpod", "--max-runtime", "5"],
         {"TRAINPOD_STORAGE_URI": "s3://bucket/trainpod"}, "the runpod SDK and httpx", "runpod"),
        ("httpx", ["launch", "oracle-rauru-cloud", "--remote", "runpod", "--max-runtime", "5"],
         {"TRAINPOD_STORAGE_URI": "s3://bucket/trainpod"}, "the runpod SDK and httpx", "runpod"),
        ("boto3", ["launch", "oracle-rauru-cloud", "--remote", "runpod", "--dry-run"],
         {"TRAINPOD_STORAGE_URI": "s3://bucket/trainpod"}, "boto3", "s3"),
        ("boto3", ["data", "ls", "s3://bucket/datasets/"], {}, "boto3", "s3"),
    ],
)
def test_each_optional_dependency_is_named_with_its_extra(tmp_path, hide, argv, env, package, extra):
    out = cli(*argv, hide=hide, cwd=tmp_path, env=env)
    assert_refused(out, f"{package} not installed", extra)
    assert not (tmp_path / "runs").exists()


def test_the_refusal_lists_every_missing_package_in_one_install_command(tmp_path):
    out = cli("launch", "smoke-zero2", "--remote", "local", hide="torch,deepspeed", cwd=tmp_path)
    assert out.returncode == 2
    assert "pip install 'trainpod[train,deepspeed]'" in out.stderr, out.stderr
    assert "no module 'torch'" in out.stderr and "no module 'deepspeed'" in out.stderr


def test_the_dev_extra_installs_every_optional_dependency():
    """`pip install -e '.[dev]'` (the README's test install) must bring every package a test needs."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def expand(name: str) -> set[str]:
        out = {name}
        for req in extras[name]:
            if req.startswith("trainpod["):
                for sub in req[len("trainpod["):req.index("]")].split(","):
                    out |= expand(sub.strip())
        return out

    assert {need.extra for need in deps.NEEDS.values()} <= expand("dev")
    # and in the environment the tests run in (CI: a fresh venv made by .ci/run) they are all there
    assert deps.missing(deps.NEEDS) == {}
