"""Settings precedence, env profiles, and secrets handling."""

from __future__ import annotations

import pytest

from trainpod.config import load_catalog
from trainpod.errors import ConfigError
from trainpod.settings import load_settings, read_profile, unknown_env_vars


def test_defaults_without_anything():
    s = load_settings()
    assert s.output_dir == "runs" and s.runpod_api_key is None and s.training == {}


def test_precedence_cli_over_env_over_profile(tmp_path, monkeypatch):
    prof = tmp_path / "p.env"
    prof.write_text("TRAINPOD_OUTPUT_DIR=from-profile\nTRAINPOD_REGISTRY=reg.profile\nTRAINPOD_LOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("TRAINPOD_OUTPUT_DIR", "from-env")
    monkeypatch.setenv("TRAINPOD_REGISTRY", "reg.env")
    s = load_settings(str(prof), registry="reg.cli")
    assert s.registry == "reg.cli"          # CLI flag wins
    assert s.output_dir == "from-env"       # env beats profile
    assert s.log_level == "DEBUG"           # profile beats default
    assert s.profile == str(prof)


def test_profile_from_env_var_and_shipped_profiles(monkeypatch):
    monkeypatch.setenv("TRAINPOD_PROFILE", "ci")
    s = load_settings()
    assert s.registry == "127.0.0.1:5000"
    assert s.training == {"hyperparameters": {"seed": "1234"}}
    for name in ("local", "docker-cpu", "runpod", "ci"):
        load_settings(name)


def test_nested_training_overrides_from_env(monkeypatch):
    monkeypatch.setenv("TRAINPOD_TRAINING__LEARNING_RATE", "3e-4")
    monkeypatch.setenv("TRAINPOD_TRAINING__LORA__R", "8")
    s = load_settings()
    cfg = load_catalog(use_cwd=False).resolve("smoke", s.training)
    assert cfg.hyperparameters.learning_rate == pytest.approx(3e-4)
    assert cfg.lora.r == 8


def test_standard_secret_names_are_secretstr(monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-canary-123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-canary-456")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("HF_TOKEN", "hf-canary-789")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    s = load_settings()
    assert s.runpod_api_key.get_secret_value() == "rp-canary-123"
    assert s.s3_endpoint_url == "http://127.0.0.1:9000"
    shown = repr(s) + str(s.redacted())
    for canary in ("rp-canary-123", "aws-canary-456", "hf-canary-789"):
        assert canary not in shown
    assert s.redacted()["runpod_api_key"] == "***"
    assert s.redacted()["aws_access_key_id"] == "AKIAEXAMPLE"  # an id, not a secret


def test_profile_refuses_secrets_with_line_number(tmp_path):
    p = tmp_path / "bad.env"
    p.write_text("# comment\nTRAINPOD_REGISTRY=x\nRUNPOD_API_KEY=abc\n")
    with pytest.raises(ConfigError) as exc:
        read_profile(p)
    assert f"{p}:3: 'RUNPOD_API_KEY' is a secret" in exc.value.message
    assert "abc" not in exc.value.message + (exc.value.hint or "")


def test_profile_unknown_key_suggests(tmp_path):
    p = tmp_path / "bad.env"
    p.write_text("TRAINPOD_REGISTY=x\n")
    with pytest.raises(ConfigError, match=r"bad.env:1: unknown setting 'TRAINPOD_REGISTY' — did you mean 'TRAINPOD_REGISTRY'"):
        read_profile(p)


def test_profile_syntax_error(tmp_path):
    p = tmp_path / "bad.env"
    p.write_text("JUSTAWORD\n")
    with pytest.raises(ConfigError, match=r"bad.env:1: expected KEY=value"):
        read_profile(p)


def test_missing_profile_lists_available():
    with pytest.raises(ConfigError) as exc:
        load_settings("runpdo")
    assert "did you mean 'runpod'" in exc.value.message
    assert "docker-cpu" in exc.value.hint


def test_unknown_trainpod_env_vars_are_reported():
    found = unknown_env_vars({"TRAINPOD_REGISTY": "x", "TRAINPOD_RUN_SPEC": "{}", "TRAINPOD_TRAINING__LR": "1"})
    assert found == ["TRAINPOD_REGISTY — did you mean 'TRAINPOD_REGISTRY'?"]
