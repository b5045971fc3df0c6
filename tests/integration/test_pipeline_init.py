"""A pipeline's second built-in stage starts from the first stage's adapter (RunSpec ``init_from``).

Real runs: the pipeline goes through the real planner, the local backend and the trainer subprocess. Stage 2
trains one step at a learning rate far below fp32 resolution, so its saved adapter *is* the adapter it started
from: comparing that with stage 1's final adapter, tensor by tensor, shows what stage 2 loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.fixtures.train import run_trainer, write_spec
from trainpod.errors import TrainpodError

PRESET = """
expert = "tiny"
hardware = "cpu"
dataset = "sample"
lora = "minimal"
sequence_length = 256
batch_size = 8
gradient_accumulation = 1
remote = "local"
"""
CATALOG = f"""
[hyperparameters.stage-sft]
num_epochs = 1
max_steps = 10
learning_rate = 1e-2
warmup_steps = 2
lr_scheduler = "linear"
eval_steps = 5
save_steps = 5
logging_steps = 5
seed = 1234

[hyperparameters.stage-hold]   # one step at 1e-12: fp32 weights of ~1e-2 cannot move, so the output = the start
num_epochs = 1
max_steps = 1
learning_rate = 1e-12
lr_scheduler = "constant"
eval_steps = 1
save_steps = 100
logging_steps = 1
seed = 1234

[presets.stage-sft]
hyperparameters = "stage-sft"
{PRESET}
[presets.stage-refine]
hyperparameters = "stage-hold"
{PRESET}
[pipelines.sft-refine]
stages = ["stage-sft", "stage-refine"]
"""


def _evals(out: Path) -> dict[int, float]:
    text = (out / "logs" / "train.log").read_text(encoding="utf-8")
    return {int(m[1]): float(m[2]) for m in re.finditer(r"eval step (\d+): val loss ([0-9.]+)", text)}


@pytest.mark.train
def test_second_stage_starts_from_the_first_stage_adapter(tmp_path):
    import torch
    from safetensors.torch import load_file

    from trainpod.pipeline import plan_pipeline, run_pipeline
    from trainpod.spec import RunSpec, StorageURIs

    toml = tmp_path / "training.toml"
    toml.write_text(CATALOG)
    kw = {"config": str(toml), "output_dir": str(tmp_path / "runs"), "remote": "local"}
    plan = plan_pipeline("sft-refine", **kw)
    first, second = plan.stages
    assert first.prepared.spec.init_from is None
    assert second.prepared.spec.init_from == first.prepared.spec.storage.output
    assert any("init_from" in n and "adapter" in n for n in second.prepared.plan.notes)

    results = run_pipeline(plan, on_line=lambda _line: None)
    assert [(name, st.state) for name, _, st in results] == [("stage-sft", "succeeded"),
                                                              ("stage-refine", "succeeded")], results
    out1, out2 = (Path(handle.output) for _, handle, _ in results)

    before = load_file(str(out1 / "adapter_model.safetensors"))
    after = load_file(str(out2 / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and len(before) >= 4  # q_proj + v_proj, A and B, per layer
    lora_b = [k for k in before if "lora_B" in k]
    assert lora_b and all(before[k].abs().max() > 1e-3 for k in lora_b)  # trained: a fresh adapter's B is zero
    for key in before:
        assert torch.allclose(before[key], after[key], rtol=0, atol=1e-8), key

    meta1 = json.loads((out1 / "metadata.json").read_text())
    meta2 = json.loads((out2 / "metadata.json").read_text())
    assert meta1["init_from"] is None and meta2["init_from"] == str(out1)
    # stage 2's first eval is stage 1's final model, far better than the cold start's first eval
    cold = _evals(out1)[5]
    assert meta2["final_val_loss"] == pytest.approx(meta1["final_val_loss"], rel=1e-4)
    assert meta2["final_val_loss"] < cold - 0.05, (meta2["final_val_loss"], cold)
    assert "init_from " + str(out1) in (out2 / "logs" / "train.log").read_text()

    # a run that resumes its own checkpoint ignores init_from (here unusable: it would exit 2 if it were read)
    resumed = tmp_path / "resumed"
    shutil.copytree(out1, resumed)
    (resumed / "DONE").unlink()
    spec = RunSpec.load(resumed / "run_spec.json")
    hp = spec.config.hyperparameters.model_copy(update={"max_steps": 6})  # one more step is enough
    spec = spec.model_copy(update={"storage": StorageURIs(dataset=spec.storage.dataset, output=str(resumed)),
                                   "init_from": str(tmp_path / "no-such-output"),
                                   "config": spec.config.model_copy(update={"hyperparameters": hp})})
    proc = run_trainer(spec.write(tmp_path / "resumed.spec.json"), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (resumed / "logs" / "train.log").read_text()
    assert "resumed from" in log and "step-00000005" in log and "no-such-output" not in log
    assert json.loads((resumed / "metadata.json").read_text())["training"]["steps"] == 6


@pytest.mark.train
def test_unusable_init_from_fails_with_exit_2_naming_the_path(tmp_path):
    from trainpod.spec import RunSpec

    empty = tmp_path / "previous-without-adapter"
    (empty / "checkpoints").mkdir(parents=True)
    spec = RunSpec.load(write_spec(tmp_path / "out", max_steps=1))
    path = spec.model_copy(update={"init_from": str(empty)}).write(tmp_path / "spec.json")
    proc = run_trainer(path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"init_from {empty}: no LoRA adapter there" in proc.stderr
    status = json.loads((tmp_path / "out" / "status.json").read_text())
    assert status["state"] == "failed" and str(empty) in status["reason"]
    assert not (tmp_path / "out" / "DONE").exists()


def test_an_adapter_of_another_shape_or_base_model_is_refused(tmp_path):
    from trainpod.config.loader import load_catalog
    from trainpod_trainer.model import check_previous

    cfg = load_catalog(use_cwd=False).resolve("smoke", {})
    prev = tmp_path / "prev"
    prev.mkdir()
    (prev / "adapter_model.safetensors").write_bytes(b"")
    adapter = {"r": cfg.lora.r, "lora_alpha": cfg.lora.lora_alpha, "target_modules": ["v_proj", "q_proj"]}
    (prev / "adapter_config.json").write_text(json.dumps(adapter))
    check_previous(cfg, prev)  # same shape, no metadata: accepted (order of target_modules does not matter)

    (prev / "adapter_config.json").write_text(json.dumps({**adapter, "target_modules": ["k_proj"]}))
    with pytest.raises(TrainpodError, match=rf"init_from {re.escape(str(prev))}: the adapter does not match .*"
                                            r"target_modules \['k_proj'\] vs \['q_proj', 'v_proj'\]"):
        check_previous(cfg, prev)
    (prev / "adapter_config.json").write_text(json.dumps(adapter))
    (prev / "metadata.json").write_text(json.dumps({"model": {"base": "Qwen/Qwen2.5-Coder-1.5B"}}))
    with pytest.raises(TrainpodError, match=r"trained on base model 'Qwen/Qwen2.5-Coder-1.5B'"):
        check_previous(cfg, prev)

    full = cfg.model_copy(update={"finetune": "full"})
    shutil.rmtree(prev)
    prev.mkdir()
    with pytest.raises(TrainpodError, match=r"no full weights there \(missing config.json, model.safetensors\)"):
        check_previous(full, prev)


def test_docker_mounts_init_from_read_only_at_previous_and_runpod_needs_s3(make_spec):
    from trainpod.backends.docker import DockerBackend
    from trainpod.backends.runpod import RunPodBackend
    from trainpod.errors import UnsupportedError
    from trainpod.settings import Settings
    from trainpod.spec import RunSpec, StorageURIs

    spec = make_spec("smoke", dataset="/srv/datasets/sample", output="/srv/runs/two", image="trainpod:test",
                     init_from="/srv/runs/one")
    plan = DockerBackend(uid=1000, gid=1000, cpus=2).plan(spec, Settings(state_dir="/srv/state"))
    (previous,) = [m for m in plan.mounts if m.target == "/previous"]
    assert previous.source == "/srv/runs/one" and previous.read_only
    assert RunSpec.from_json(plan.env["TRAINPOD_RUN_SPEC"]).init_from == "/previous"
    assert "type=bind,source=/srv/runs/one,target=/previous,readonly" in plan.provider_request["docker_run"]
    remote = spec.model_copy(update={"init_from": "s3://bucket/runs/one"})
    plan = DockerBackend(uid=1000, gid=1000, cpus=2).plan(remote, Settings(state_dir="/srv/state"))
    assert all(m.target != "/previous" for m in plan.mounts)
    assert RunSpec.from_json(plan.env["TRAINPOD_RUN_SPEC"]).init_from == "s3://bucket/runs/one"

    cloud = make_spec("oracle-rauru-cloud", remote="runpod", image="ghcr.io/acme/trainpod:cuda-0123456789ab")
    cloud = cloud.model_copy(update={"storage": StorageURIs(dataset="s3://bucket/datasets/sample",
                                                            output="s3://bucket/runs/two")})
    settings = Settings(storage_uri="s3://bucket/trainpod", aws_region="eu-west-1")
    with pytest.raises(UnsupportedError, match=r"init_from .* is a local path \(/srv/runs/one\)") as info:
        RunPodBackend().plan(cloud.model_copy(update={"init_from": "/srv/runs/one"}), settings)
    assert info.value.hint
    planned = RunPodBackend().plan(cloud.model_copy(update={"init_from": "s3://bucket/runs/one"}), settings)
    assert planned.spec.init_from == "s3://bucket/runs/one"


@pytest.mark.train
@pytest.mark.s3
def test_s3_init_from_is_fetched_without_its_checkpoints(s3, tmp_path):
    import torch
    from safetensors.torch import load_file

    from tests.fixtures.s3 import ACCESS_KEY, SECRET_KEY
    from trainpod import storage
    from trainpod.spec import RunSpec
    from trainpod_trainer.model import load_model, save_weights

    spec = RunSpec.load(write_spec(tmp_path / "out", max_steps=1, learning_rate=1e-12, lr_scheduler="constant",
                                   warmup_steps=0, save_steps=100))
    torch.manual_seed(7)
    model = load_model(spec.config, torch.device("cpu"))
    with torch.no_grad():  # a trained-looking adapter: a fresh one's lora_B is all zeros
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    prev = tmp_path / "previous-run"
    save_weights(model, prev)
    (prev / "checkpoints" / "step-00000010").mkdir(parents=True)
    (prev / "checkpoints" / "step-00000010" / "optimizer.pt").write_bytes(b"\0" * 4096)
    uri = s3.uri("runs/previous-run")
    storage.sync_up(prev, uri)

    path = spec.model_copy(update={"init_from": uri}).write(tmp_path / "spec.json")
    work = tmp_path / "work"
    proc = run_trainer(path, timeout=120, AWS_ENDPOINT_URL=s3.endpoint, AWS_ACCESS_KEY_ID=ACCESS_KEY,
                       AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1", TRAINPOD_WORK_DIR=str(work))
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = load_file(str(prev / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.allclose(before[key], after[key], rtol=0, atol=1e-8), key
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["init_from"] == uri
    fetched = sorted(p.name for p in (work / "previous").iterdir())
    assert fetched == ["adapter_config.json", "adapter_model.safetensors"]  # not the previous run's checkpoints


@pytest.mark.train
def test_a_full_finetune_stage_starts_from_the_previous_full_weights(tmp_path):
    import torch

    from trainpod.config.loader import load_catalog
    from trainpod_trainer.model import load_model, save_weights

    cfg = load_catalog(use_cwd=False).resolve("smoke", {"finetune": "full"})
    cpu = torch.device("cpu")
    trained = load_model(cfg, cpu)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_weights(trained, tmp_path / "previous")
    started = load_model(cfg, cpu, tmp_path / "previous")
    fresh = load_model(cfg, cpu)
    for (name, a), b, c in zip(trained.named_parameters(), started.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(a, b), name
        assert b.requires_grad and not torch.equal(b, c), name


def _wait_docker(backend, handle, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while (st := backend.status(handle)).state in ("pending", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
    return st


@pytest.mark.docker
@pytest.mark.train
def test_docker_stage_starts_from_the_previous_adapter_mounted_read_only(docker_env, cpu_image, image_tree,
                                                                         make_spec, tmp_path):
    import torch
    from safetensors.torch import load_file

    from trainpod.backends.docker import DockerBackend
    from trainpod.settings import load_settings
    from trainpod_trainer.model import load_model, save_weights

    spec = make_spec("smoke", run_id=f"init-docker-{int(time.time())}", output=str(tmp_path / "out"),
                     dataset=str(image_tree / "profiles" / "data" / "sample"), image=cpu_image.tag,
                     overrides={"max_steps": 1, "learning_rate": 1e-12, "lr_scheduler": "constant",
                                "warmup_steps": 0, "save_steps": 100, "eval_steps": 1})
    torch.manual_seed(11)
    model = load_model(spec.config, torch.device("cpu"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    save_weights(model, tmp_path / "previous")
    spec = spec.model_copy(update={"init_from": str(tmp_path / "previous")})
    settings = load_settings()
    backend = DockerBackend()
    if os.geteuid() == 0:  # launched by root, the container runs as uid 1000: root's 0600 files are a clear refusal
        handle = backend.submit(backend.plan(spec, settings), settings)
        try:
            st = _wait_docker(backend, handle)
            assert st.state == "failed" and st.exit_code == 2, st
            assert "init_from /previous: adapter_model.safetensors not readable by uid 1000" in "\n".join(
                backend.logs(handle))
        finally:
            docker_env.client().containers.get(handle.provider_id).remove(force=True)
        for path in (tmp_path / "previous").iterdir():
            path.chmod(0o644)
        spec = spec.model_copy(update={"run_id": spec.run_id + "-2"})
    handle = backend.submit(backend.plan(spec, settings), settings)
    try:
        st = _wait_docker(backend, handle)
        assert st.state == "succeeded", (st, "\n".join(backend.logs(handle)))
    finally:
        docker_env.client().containers.get(handle.provider_id).remove(force=True)
    before = load_file(str(tmp_path / "previous" / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    for key in before:
        assert torch.allclose(before[key], after[key], rtol=0, atol=1e-8), key
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["init_from"] == "/previous"
