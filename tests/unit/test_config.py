"""training.toml: schema, overlay, cross-checks and the error messages a user sees."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from trainpod.config import load_catalog
from trainpod.config.loader import DEFAULT_TOML
from trainpod.errors import ConfigError

SHIPPED_PRESETS = ["smoke", "oracle-rauru-cpu", "oracle-rauru-mac", "oracle-rauru-cloud", "oracle-rauru-a100"]
SHIPPED_HARDWARE = ["cpu", "mac-mps", "cpu-resource-efficient", "cloud-rtx-4090", "cloud-a100-40gb",
                    "cloud-a100-80gb", "windows-rtx-5060"]


def write(tmp_path: Path, text: str, name: str = "training.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def test_every_shipped_preset_validates():
    cat = load_catalog(use_cwd=False)
    assert set(SHIPPED_PRESETS) <= set(cat.presets)
    assert set(SHIPPED_HARDWARE) <= set(cat.hardware)
    assert {"oracle-rauru-assembler", "oracle-sheik-debugger", "oracle-purah-profiler", "tiny"} <= set(cat.experts)
    assert {"minimal", "standard", "full"} <= set(cat.lora)
    assert {"default", "production"} <= set(cat.hyperparameters)
    for name in cat.presets:
        cfg = cat.resolve(name)
        assert cfg.batch_size <= cfg.hardware.max_batch_size
        assert cfg.sequence_length <= min(cfg.hardware.max_sequence_length, cfg.expert.context_window)


def test_precision_is_derived_from_hardware():
    cat = load_catalog(use_cwd=False)
    assert cat.resolve("smoke").precision == "fp32"
    assert cat.resolve("oracle-rauru-cloud").precision == "bf16"
    assert cat.resolve("oracle-rauru-mac").precision == "fp16"


def test_shipped_dataset_path_is_resolved_next_to_the_toml():
    cat = load_catalog(use_cwd=False)
    assert Path(cat.datasets["sample"].path) == (DEFAULT_TOML.parent / "data" / "sample").resolve()


def test_unknown_key_names_file_table_and_suggests(tmp_path):
    p = write(tmp_path, """
        [presets.mine]
        expert = "tiny"
        hardware = "cpu"
        dataset = "sample"
        sequence_length = 128
        bach_size = 4
    """)
    with pytest.raises(ConfigError) as exc:
        load_catalog(p)
    msg = exc.value.message
    assert "training.toml: presets.mine.bach_size: unknown key 'bach_size'" in msg
    assert "did you mean 'batch_size'?" in msg


def test_unknown_table_suggests(tmp_path):
    p = write(tmp_path, "[presest.x]\nexpert = 'tiny'\n")
    with pytest.raises(ConfigError, match=r"unknown table \[presest\] — did you mean 'presets'\?"):
        load_catalog(p)


def test_malformed_toml_reports_line_and_column(tmp_path):
    p = write(tmp_path, "[presets.x]\nexpert = 'tiny'\nbatch_size = = 3\n")
    with pytest.raises(ConfigError) as exc:
        load_catalog(p)
    assert exc.value.message.startswith(f"{p}:3:") or ":3:" in exc.value.message
    assert "TOML syntax error" in exc.value.message
    assert "batch_size = = 3" in (exc.value.hint or "")


def test_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "training.toml"
    p.write_bytes(b"# ok\n# bad \xff\n")
    with pytest.raises(ConfigError, match=r":2: not valid UTF-8"):
        load_catalog(p)


def test_wrong_type_names_the_key(tmp_path):
    p = write(tmp_path, """
        [hardware.box]
        name = "box"
        device = "cpu"
        available_memory_gb = "lots"
        max_batch_size = 4
        max_sequence_length = 512
    """)
    with pytest.raises(ConfigError, match=r"hardware\.box\.available_memory_gb: .*number"):
        load_catalog(p)


def test_user_overlay_adds_a_preset_without_copying_everything(tmp_path):
    p = write(tmp_path, """
        [presets.mine]
        expert = "tiny"
        hardware = "cpu-resource-efficient"
        dataset = "sample"
        lora = "minimal"
        sequence_length = 128
        batch_size = 2
    """)
    cat = load_catalog(p)
    assert "smoke" in cat.presets and "mine" in cat.presets
    cfg = cat.resolve("mine")
    assert cfg.gradient_accumulation == 4  # recommended by the hardware profile
    assert cat.source("presets", "mine").endswith("training.toml")


def test_user_overlay_replaces_an_entry(tmp_path):
    p = write(tmp_path, """
        [lora.minimal]
        r = 2
        lora_alpha = 4
        target_modules = ["q_proj"]
    """)
    assert load_catalog(p).resolve("smoke").lora.r == 2


def test_cwd_profiles_training_toml_is_picked_up(tmp_path, monkeypatch):
    (tmp_path / "profiles").mkdir()
    write(tmp_path / "profiles", """
        [presets.from-cwd]
        expert = "tiny"
        hardware = "cpu"
        dataset = "sample"
        sequence_length = 128
        batch_size = 2
    """)
    monkeypatch.chdir(tmp_path)
    assert "from-cwd" in load_catalog().presets


def test_unknown_reference_lists_available_names(tmp_path):
    p = write(tmp_path, """
        [presets.bad]
        expert = "tiny"
        hardware = "cloud-rtx-4009"
        dataset = "sample"
        sequence_length = 128
        batch_size = 2
    """)
    with pytest.raises(ConfigError) as exc:
        load_catalog(p).resolve("bad")
    assert "presets.bad.hardware: unknown hardware entry 'cloud-rtx-4009' — did you mean 'cloud-rtx-4090'?" in exc.value.message
    assert "cpu-resource-efficient" in exc.value.hint


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("batch_size = 64", "batch_size 64 exceeds hardware 'cpu' max_batch_size 16"),
        ("sequence_length = 4096\nbatch_size = 1", "sequence_length 4096 exceeds hardware 'cpu' max_sequence_length 2048"),
        ('lora = "full"\nhardware_override = 1', "unknown key 'hardware_override'"),
        ('precision = "bf16"', "precision 'bf16' is not supported by hardware 'cpu'"),
        ('precision = "fp16"', "precision 'fp16' is not supported by hardware 'cpu'"),
    ],
)
def test_cross_checks_name_preset_and_field(tmp_path, extra, expected):
    base = {"expert": '"tiny"', "hardware": '"cpu"', "dataset": '"sample"', "sequence_length": "256", "batch_size": "8"}
    for line in extra.splitlines():
        base.pop(line.split("=")[0].strip(), None)
    body = "\n".join(f"{k} = {v}" for k, v in base.items()) + "\n" + extra
    p = write(tmp_path, "[presets.x]\n" + body + "\n")
    with pytest.raises(ConfigError) as exc:
        load_catalog(p).resolve("x")
    assert expected in exc.value.message
    assert "presets.x" in exc.value.message


def test_sequence_length_beyond_context_window(tmp_path):
    p = write(tmp_path, """
        [presets.x]
        expert = "tiny"
        hardware = "cloud-a100-80gb"
        dataset = "sample"
        sequence_length = 1024
        batch_size = 2
    """)
    with pytest.raises(ConfigError, match="exceeds expert 'tiny' context_window 512"):
        load_catalog(p).resolve("x")


def test_lora_rank_beyond_hardware(tmp_path):
    p = write(tmp_path, """
        [presets.x]
        expert = "tiny"
        hardware = "cpu-resource-efficient"
        dataset = "sample"
        lora = "full"
        sequence_length = 128
        batch_size = 2
    """)
    with pytest.raises(ConfigError, match=r"lora 'full' r=64 exceeds hardware 'cpu-resource-efficient' max_lora_rank 16"):
        load_catalog(p).resolve("x")


def test_unsupported_hardware_refused_with_reason(tmp_path):
    p = write(tmp_path, """
        [presets.x]
        expert = "tiny"
        hardware = "windows-rtx-5060"
        dataset = "sample"
        sequence_length = 128
        batch_size = 2
    """)
    with pytest.raises(ConfigError, match=r"hardware 'windows-rtx-5060' is not supported: sm_120"):
        load_catalog(p).resolve("x")


def test_gradient_checkpointing_only_where_supported(tmp_path):
    p = write(tmp_path, """
        [hardware.old]
        name = "old"
        device = "cpu"
        available_memory_gb = 4
        max_batch_size = 4
        max_sequence_length = 512
        supports_gradient_checkpointing = false

        [presets.x]
        expert = "tiny"
        hardware = "old"
        dataset = "sample"
        lora = "minimal"
        sequence_length = 128
        batch_size = 2
        gradient_checkpointing = true
    """)
    with pytest.raises(ConfigError, match="gradient_checkpointing is not supported by hardware 'old'"):
        load_catalog(p).resolve("x")


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[datasets.d]\npath = "s3:///nobucket"', "has no bucket"),
        ('[datasets.d]\npath = "gs://bucket/x"', "only local paths and s3://"),
        ('[experts.e]\ndisplay_name="e"\nbase_model="m"\ncontext_window=64\nprompt_template="{instruction} {oops} {output}"',
         "unknown placeholder"),
        ('[experts.e]\ndisplay_name="e"\nbase_model="builtin:tiny-qwen2"\ncontext_window=64\ngated=true',
         "gated = true is for a gated or private Hugging Face hub id"),
        ('[hardware.h]\nname="h"\ndevice="cuda"\navailable_memory_gb=8\nmax_batch_size=1\nmax_sequence_length=64\ngpu_count=1\nimage="cuda"',
         "needs cuda_version"),
        ('[hardware.h]\nname="h"\ndevice="cpu"\navailable_memory_gb=8\nmax_batch_size=1\nmax_sequence_length=64\nsupported=false',
         "needs unsupported_reason"),
        ('[presets]\nexpert = "tiny"', "must contain named sub-tables"),
    ],
)
def test_table_level_validation(tmp_path, table, expected):
    p = write(tmp_path, table + "\n")
    with pytest.raises(ConfigError, match=expected):
        load_catalog(p)


def test_overrides_apply_and_are_rechecked():
    cat = load_catalog(use_cwd=False)
    cfg = cat.resolve("smoke", {"learning_rate": "3e-4", "lora": {"r": 2}, "batch_size": 4})
    assert cfg.hyperparameters.learning_rate == pytest.approx(3e-4)
    assert cfg.lora.r == 2 and cfg.batch_size == 4
    with pytest.raises(ConfigError, match="exceeds hardware 'cpu' max_batch_size"):
        cat.resolve("smoke", {"batch_size": 999})
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        cat.resolve("smoke", {"lerning_rate": 1})
