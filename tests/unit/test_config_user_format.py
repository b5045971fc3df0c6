"""A training.toml in the format users bring (../shared/config-format.md) loads unchanged.

tests/examples/training.toml is such a file, with every table and key of that format;
tests/integration/test_user_format_launch.py launches one of its presets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from trainpod.config import load_catalog
from trainpod.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "training.toml"

# config-format.md, table by table: the keys that format has
FORMAT_KEYS = {
    "hardware": {"name", "device", "available_memory_gb", "max_batch_size", "max_sequence_length", "supports_fp16",
                 "supports_bf16", "supports_gradient_checkpointing", "max_lora_rank",
                 "recommended_gradient_accumulation"},
    "experts": {"display_name", "role", "group", "base_model", "context_window", "specialization",
                "prompt_template"},
    "lora": {"r", "lora_alpha", "target_modules"},
    "hyperparameters": {"num_epochs", "learning_rate", "warmup_steps", "weight_decay", "lr_scheduler"},
    "datasets": {"path", "description", "train_split", "val_split", "test_split", "quality_threshold", "domains"},
    "presets": {"expert", "hardware", "dataset", "hyperparameters", "lora", "sequence_length", "batch_size",
                "gradient_accumulation"},
}


def test_the_example_is_complete_and_only_uses_that_format():
    data = tomllib.loads(EXAMPLE.read_text())
    assert set(data) == set(FORMAT_KEYS)
    for table, keys in FORMAT_KEYS.items():
        used = set().union(*(entry.keys() for entry in data[table].values()))
        assert used == keys, (table, used ^ keys)
    assert {h["device"] for h in data["hardware"].values()} == {"mps", "cuda", "cpu"}
    assert all(p.startswith("~") for p in (d["path"] for d in data["datasets"].values()))
    for expert in data["experts"].values():
        assert all(f"{{{f}}}" in expert["prompt_template"] for f in ("instruction", "input_section", "context", "output"))


def test_it_loads_unchanged_and_every_preset_resolves(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    catalog = load_catalog(EXAMPLE, use_cwd=False)
    cloud = catalog.resolve("oracle-rauru-cloud")
    # a cuda profile without gpu_count is one GPU, packaged in the CUDA image
    assert cloud.hardware.gpu_count == 1 and cloud.world_size == 1
    assert cloud.hardware.image == "cuda" and cloud.hardware.cuda_version == "13.0"
    assert cloud.precision == "bf16" and cloud.effective_batch_size == 16
    mac = catalog.resolve("oracle-rauru-mac")
    assert mac.hardware.gpu_count == 0 and mac.hardware.image == "none" and mac.precision == "fp16"
    quick = catalog.resolve("oracle-rauru-quick")
    assert quick.hardware.gpu_count == 0 and quick.hardware.image == "cpu"
    ds = quick.dataset
    assert ds.path == str(tmp_path / "datasets" / "rauru-asm")  # ~ is the user's home
    assert (ds.train, ds.val, ds.test) == ("train.jsonl", "val.jsonl", "test.jsonl")  # "train" is train.jsonl
    assert ds.description.startswith("Assembly Q&A pairs") and ds.quality_threshold == 0.7
    assert quick.expert.role == "asm" and quick.expert.group == "rom-tooling"
    assert quick.hyperparameters.lr_scheduler == "linear" and quick.lora.target_modules == ["q_proj", "v_proj"]


def test_show_prints_the_canonical_names(tmp_path):
    res = subprocess.run([sys.executable, "-m", "trainpod", "--config", str(EXAMPLE), "show", "oracle-rauru-quick"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert "train: train.jsonl" in res.stdout and "val: val.jsonl" in res.stdout and "test: test.jsonl" in res.stdout
    assert "train_split" not in res.stdout and f"path: {tmp_path}/datasets/rauru-asm" in res.stdout


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "training.toml"
    p.write_text(body)
    return p


def test_a_split_given_under_both_names_must_agree(tmp_path):
    p = _write(tmp_path, '[datasets.d]\npath = "x"\ntrain = "a.jsonl"\ntrain_split = "b.jsonl"\n')
    with pytest.raises(ConfigError, match=r"training.toml: datasets.d: train_split = 'b.jsonl' and train = 'a.jsonl'"):
        load_catalog(p, use_cwd=False)
    p = _write(tmp_path, '[datasets.d]\npath = "x"\ntrain = "a.jsonl"\ntrain_split = "a.jsonl"\n')
    assert load_catalog(p, use_cwd=False).datasets["d"].train == "a.jsonl"
    p = _write(tmp_path, '[datasets.d]\npath = "x"\nval_split = "../secret.jsonl"\n')
    with pytest.raises(ConfigError, match="datasets.d.val: .*a split is a file name inside the dataset's path"):
        load_catalog(p, use_cwd=False)


def test_explicit_gpu_count_and_image_still_win(tmp_path):
    p = _write(tmp_path, """
[hardware.two]
name = "2 GPUs"
device = "cuda"
available_memory_gb = 24
max_batch_size = 8
max_sequence_length = 1024
gpu_count = 2
image = "cuda"
cuda_version = "12.9"

[hardware.cuda-cpu-image]
name = "odd but explicit"
device = "cuda"
available_memory_gb = 24
max_batch_size = 8
max_sequence_length = 1024
image = "cpu"
""")
    hw = load_catalog(p, use_cwd=False).hardware
    assert (hw["two"].gpu_count, hw["two"].cuda_version) == (2, "12.9")
    assert (hw["cuda-cpu-image"].gpu_count, hw["cuda-cpu-image"].image) == (1, "cpu")
    bad = _write(tmp_path, '[hardware.h]\nname="h"\ndevice="cuda"\navailable_memory_gb=8\nmax_batch_size=1\n'
                           'max_sequence_length=64\ngpu_count=0\n')
    with pytest.raises(ConfigError, match="needs gpu_count >= 1"):  # an explicit 0 GPUs on cuda is still wrong
        load_catalog(bad, use_cwd=False)


def test_every_accepted_lr_scheduler_builds(tmp_path):
    """The users' format hands lr_scheduler to transformers: each name the schema accepts must build there."""
    import typing

    import torch

    from trainpod.config.schema import Hyperparameters
    from trainpod_trainer.run import make_scheduler

    names = typing.get_args(Hyperparameters.model_fields["lr_scheduler"].annotation)
    assert {"cosine_with_restarts", "polynomial", "inverse_sqrt"} <= set(names)
    for name in names:
        p = _write(tmp_path, f'[hyperparameters.h]\nnum_epochs = 1\nlr_scheduler = "{name}"\n')
        assert load_catalog(p, use_cwd=False).hyperparameters["h"].lr_scheduler == name
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make_scheduler(opt, name, warmup=2, total=10)
        for _ in range(10):
            opt.step()
            sched.step()
        assert 0 <= sched.get_last_lr()[0] <= 0.1, name
