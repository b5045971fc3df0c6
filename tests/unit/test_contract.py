"""The container contract is written once (trainpod.contract) and read one way by every backend."""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

import pytest

from trainpod import contract
from trainpod.backends.docker import DockerBackend
from trainpod.backends.runpod import RunPodBackend, expected_hours
from trainpod.config.loader import load_catalog
from trainpod.settings import Settings
from trainpod.spec import RunSpec, StorageURIs

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for d in ("cli/trainpod", "trainer/trainpod_trainer") for p in (ROOT / d).rglob("*.py")]


@pytest.mark.parametrize(("code", "done", "cancelled", "resumable", "state"), [
    (0, True, False, True, "succeeded"),
    (None, True, False, True, "succeeded"),
    (0, False, False, True, "failed"),          # exited 0 without DONE is not a success
    (3, False, True, True, "cancelled"),        # `runs cancel`: stopped after a checkpoint because we asked
    (3, False, False, True, "preempted"),       # stopped after a checkpoint by something else: resumable
    (3, False, False, False, "failed"),         # e.g. a pod's watchdog: its budget ended, no relaunch
    (1, False, False, True, "failed"),
    (137, False, True, True, "cancelled"),
])
def test_exit_code_maps_to_one_state(code, done, cancelled, resumable, state):
    assert contract.state_after_exit(code, done=done, cancelled=cancelled, resumable=resumable) == state


# Contract facts that only trainpod.contract may spell out (settings.py reads the standard secret names as aliases).
FACTS = ['"TRAINPOD_RUN_SPEC"', '"TRAINPOD_OUTPUT_DIR"', '"TRAINPOD_DATA_DIR"', '"TRAINPOD_RESUME_DIR"',
         '"TRAINPOD_PREVIOUS_OUTPUT"', '"TRAINPOD_STOP_GRACE_SECONDS"', '"POD_EXIT"', '"POD_STUCK"', '"DONE"', '"/output"',
         '"/data"', '"/previous"', '"/opt/project"', '"AWS_SECRET_ACCESS_KEY"', '"TRAINPOD_S3_ENDPOINT_URL"',
         '"AWS_DEFAULT_REGION"']


def _string_literals(path: Path) -> set[str]:
    with path.open("rb") as fh:
        return {tok.string for tok in tokenize.tokenize(fh.readline) if tok.type == tokenize.STRING}


def test_contract_facts_are_written_once():
    found = []
    for path in SOURCES:
        if path.name in ("contract.py", "settings.py"):
            continue
        found += [f"{path.relative_to(ROOT)}: {fact}" for fact in FACTS if fact in _string_literals(path)]
    assert found == []


def test_stopped_exit_code_is_defined_once():
    """No module restates "3" as the stopped code (trainpod_trainer.exitcodes re-exports the contract's)."""
    pattern = re.compile(r"^\s*_?[A-Z_]*STOPPED\s*=\s*3\b", re.MULTILINE)
    assert [p.name for p in SOURCES if pattern.search(p.read_text(encoding="utf-8"))] == ["contract.py"]


def _spec(preset: str, remote: str, output: str) -> RunSpec:
    cfg = load_catalog(use_cwd=False).resolve(preset, {})
    return RunSpec(run_id="contract-x-1", created="2026-01-01T00:00:00+00:00", remote=remote, config=cfg,
                   image="registry.example/trainpod:x", storage=StorageURIs(dataset="s3://b/data", output=output))


def test_every_backend_hands_s3_settings_to_the_container_under_the_same_names():
    settings = Settings(storage_uri="s3://b", s3_endpoint_url="http://127.0.0.1:9000", aws_region="eu-west-1",
                        aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="s3cr3t-never-shown",
                        state_dir="/srv/state")
    want = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1"}
    docker = DockerBackend(uid=1000, gid=1000, cpus=2).plan(_spec("smoke", "docker", "/srv/runs/x"), settings)
    pod = RunPodBackend().plan(_spec("oracle-rauru-cloud", "runpod", "s3://b/runs/x"), settings)
    for plan in (docker, pod):
        assert {k: plan.env.get(k) for k in want} == want
        assert "AWS_SECRET_ACCESS_KEY" in plan.secret_env and "s3cr3t-never-shown" not in plan.model_dump_json()
    # this machine's key id goes to a local container; a pod gets a run-scoped session instead (trainpod.credentials)
    assert docker.env["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE" and "AWS_ACCESS_KEY_ID" not in pod.env


def test_peak_tflops_is_hardware_data(tmp_path):
    """The duration heuristic reads the hardware table: a GPU type is added in TOML, not in code."""
    cfg = load_catalog(use_cwd=False).resolve("oracle-rauru-cloud", {"max_runtime_minutes": None,
                                                                    "hyperparameters": {"max_steps": 1000}})
    hours, why = expected_hours(cfg)
    assert cfg.hardware.peak_tflops == 165 and "165 TFLOPS" in why
    faster = cfg.model_copy(update={"hardware": cfg.hardware.model_copy(update={"peak_tflops": 330.0})})
    hours2, _ = expected_hours(faster)
    startup = 10 / 60
    assert hours2 - startup == pytest.approx((hours - startup) / 2)
    unknown = cfg.model_copy(update={"hardware": cfg.hardware.model_copy(update={"peak_tflops": None})})
    assert expected_hours(unknown)[0] is None
