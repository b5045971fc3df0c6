"""DeepSpeed config filling and the launch wrapper's exit-code rule (pure; no deepspeed import)."""

from __future__ import annotations

import json

import pytest

from trainpod.config import load_catalog
from trainpod.errors import ConfigError
from trainpod_trainer import exitcodes
from trainpod_trainer.ds import build_config
from trainpod_trainer.launch import combine


def cfg_for(preset: str, **overrides):
    return load_catalog(use_cwd=False).resolve(preset, overrides)


@pytest.mark.parametrize("name", ["zero1", "zero2", "zero3", "zero3-offload"])
def test_every_packaged_config_is_filled_from_the_preset(name):
    cfg = cfg_for("oracle-rauru-4xa100-full", precision="bf16")
    out = build_config(cfg, world=4, hidden_size=1536, name=name)
    assert "auto" not in json.dumps(out)
    assert out["train_micro_batch_size_per_gpu"] == cfg.batch_size
    assert out["gradient_accumulation_steps"] == cfg.gradient_accumulation
    assert out["train_batch_size"] == cfg.batch_size * cfg.gradient_accumulation * 4
    assert out["gradient_clipping"] == cfg.hyperparameters.max_grad_norm
    assert out["bf16"]["enabled"] is True and out["fp16"]["enabled"] is False
    zero = out["zero_optimization"]
    if zero["stage"] == 3:
        assert zero["reduce_bucket_size"] == 1536 * 1536
        assert zero["stage3_param_persistence_threshold"] == 15360
    if "offload_optimizer" in zero:
        assert out["zero_force_ds_cpu_optimizer"] is False  # our torch AdamW on offloaded state


def test_cpu_preset_runs_in_fp32_with_the_env_named_config(monkeypatch):
    monkeypatch.setenv("TRAINPOD_DEEPSPEED_CONFIG", "zero1")
    out = build_config(cfg_for("smoke-zero2"), world=2, hidden_size=64)
    assert out["zero_optimization"]["stage"] == 1
    assert out["bf16"]["enabled"] is False and out["fp16"]["enabled"] is False
    assert out["train_batch_size"] == 8


def _write(tmp_path, data) -> str:
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_value_that_contradicts_the_preset_names_file_and_key(tmp_path):
    name = _write(tmp_path, {"train_micro_batch_size_per_gpu": 16, "zero_optimization": {"stage": 2}})
    with pytest.raises(ConfigError, match=r"custom.json: train_micro_batch_size_per_gpu = 16 disagrees"):
        build_config(cfg_for("smoke-zero2"), world=2, hidden_size=64, name=name)


def test_an_unfillable_auto_and_an_optimizer_section_are_refused(tmp_path):
    name = _write(tmp_path, {"zero_optimization": {"stage": 2, "sub_group_size": "auto"}})
    with pytest.raises(ConfigError, match=r"unfilled at zero_optimization.sub_group_size"):
        build_config(cfg_for("smoke-zero2"), world=2, hidden_size=64, name=name)
    name = _write(tmp_path, {"optimizer": {"type": "AdamW"}})
    with pytest.raises(ConfigError, match="'optimizer' is not allowed"):
        build_config(cfg_for("smoke-zero2"), world=2, hidden_size=64, name=name)
    with pytest.raises(ConfigError, match="zero9.json not found"):
        build_config(cfg_for("smoke-zero2"), world=2, hidden_size=64, name="zero9")


def test_the_launcher_reports_the_most_severe_rank_code():
    assert combine([3, 3], launcher_code=1) == exitcodes.STOPPED
    assert combine([3, 1], launcher_code=1) == exitcodes.FAILED
    assert combine([4, 3], launcher_code=1) == exitcodes.MEMORY
    assert combine([2], launcher_code=1) == exitcodes.BAD_INPUT
    assert combine([], launcher_code=-9) == 137  # killed before any rank recorded a code
    assert combine([0, 0], launcher_code=0) == exitcodes.OK
