"""A preset from a training.toml in the users' format (tests/examples/training.toml) launches unchanged.

The real CLI, ``--remote local``, the shipped tiny model; the dataset lives under ``~`` as the file says
(HOME points at a temporary directory holding a copy of the shipped sample dataset).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trainpod.config import load_catalog

pytestmark = pytest.mark.train

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "training.toml"


def test_a_preset_of_the_users_format_launches_and_writes_their_metadata(tmp_path):
    home = tmp_path / "home"
    shutil.copytree(load_catalog(use_cwd=False).datasets["sample"].path, home / "datasets" / "rauru-asm")
    env = {**os.environ, "HOME": str(home)}
    res = subprocess.run(["trainpod", "--config", str(EXAMPLE), "launch", "oracle-rauru-quick", "--remote", "local",
                          "--output-dir", str(tmp_path / "runs"), "--set", "max_steps=6"],
                         capture_output=True, text=True, timeout=240, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "step 6/6" in res.stdout
    (out,) = (tmp_path / "runs").iterdir()
    assert (out / "DONE").is_file() and (out / "adapter_model.safetensors").is_file()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["expert"] == {"name": "Oracle: Rauru Assembler (tiny, for a dry run of the pipeline)", "role": "asm",
                              "group": "rom-tooling",
                              "specialization": "The Rauru prompt format on trainpod's shipped tiny model",
                              "id": "oracle-rauru-tiny"}
    assert meta["model"]["base"] == "builtin:tiny-qwen2" and meta["model"]["lora_rank"] == 4
    assert meta["training"]["dataset"] == str(home / "datasets" / "rauru-asm")
    assert meta["training"]["num_samples"] > 100 and meta["training"]["steps"] == 6
    assert meta["hardware"]["name"] == "Laptop CPU (16 GB RAM)" and meta["hardware"]["device"] == "cpu"
