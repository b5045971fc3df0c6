"""The CUDA training image (``cloud-rtx-4090``) built on the real engine and checked inside, on CPU.

What a pod relies on and this machine (no GPU) can still prove: the image builds on the same bootstrapped
Debian + Python base as the CPU image with torch's CUDA build from the configured index; torch, transformers,
peft and deepspeed import; ``torch.version.cuda`` is at least the profile's CUDA floor and torch's kernels cover
the profile's ``cuda_arch_list``; DeepSpeed's fused Adam is compiled in (no nvcc on a pod) and its CPU Adam
is prebuilt with portable flags and steps; the smoke preset trains on CPU through the image's entrypoint; the image survives a
push to the loopback registry and a pull back. Running kernels on a GPU is benchmarks/gpu_check.py's job.

The cold build downloads torch's CUDA wheels (several GB) and compiles fused Adam: minutes. The tag is
content-addressed, so later sessions on the same engine reuse it.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid

import pytest

from trainpod import images
from trainpod.config.loader import load_catalog
from trainpod.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.cuda_image]

HARDWARE = "cloud-rtx-4090"
PROBE = r"""
import json, os, time
import torch, transformers, peft, deepspeed
from deepspeed.git_version_info import installed_ops
from deepspeed.ops.adam import fused_adam_op  # the prebuilt extension loads (no GPU needed to load it)
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "arch_list": torch.cuda.get_arch_list(),
                  "transformers": transformers.__version__, "peft": peft.__version__,
                  "deepspeed": deepspeed.__version__, "fused_adam": installed_ops.get("fused_adam"),
                  "env_arch": os.environ.get("TORCH_CUDA_ARCH_LIST"), "nvcc_on_path": any(
                      os.path.exists(os.path.join(p, "nvcc")) for p in os.environ["PATH"].split(":"))}))
"""


def covers(arch: str, compiled: list[str]) -> bool:
    """Whether torch's compiled kernels run on compute capability ``arch`` ("8.9"): a cubin of the same major
    and a minor not above it (sm_86 runs on 8.9), or PTX (compute_XY) of a capability not above it."""
    major, minor = (int(x) for x in arch.replace("+PTX", "").split("."))
    for entry in compiled:
        kind, _, cc = entry.partition("_")
        cmaj, cmin = int(cc[:-1]), int(cc[-1])
        if kind == "sm" and cmaj == major and cmin <= minor:
            return True
        if kind == "compute" and (cmaj, cmin) <= (major, minor):
            return True
    return False


@pytest.fixture(scope="session")
def cuda_image(docker_engine, image_tree):
    os.environ.setdefault("DOCKER_HOST", docker_engine.docker_host)
    hw = load_catalog(use_cwd=False).get("hardware", HARDWARE)
    plan = images.image_plan(HARDWARE, hw, Settings(), base_image=docker_engine.base_image, root=image_tree)
    started = time.monotonic()
    built = images.build(plan, client=docker_engine.client())
    took = f"built in {time.monotonic() - started:.0f}s" if built else "already built"
    print(f"\nCUDA image {plan.tag}: {took}")
    return plan


def _run(client, tag: str, command: list[str], **kw) -> str:
    return client.containers.run(tag, command, network_mode="host", remove=True, **kw).decode()


def test_cuda_image_imports_and_matches_the_profile(docker_env, cuda_image) -> None:
    hw = load_catalog(use_cwd=False).get("hardware", HARDWARE)
    client = docker_env.client()
    img = client.images.get(cuda_image.tag)
    assert img.attrs["Config"]["User"] == "1000:1000"
    assert img.attrs["Config"]["Entrypoint"] == ["/usr/local/bin/entrypoint.sh"]
    labels = img.attrs["Config"]["Labels"]
    assert labels["dev.trainpod.hardware"] == HARDWARE and labels["dev.trainpod.cuda-version"] == hw.cuda_version
    assert cuda_image.build_args["BASE_IMAGE"] == docker_env.base_image  # the bootstrapped Debian + Python base

    info = json.loads(_run(client, cuda_image.tag, ["python", "-c", PROBE]).strip().splitlines()[-1])
    assert info["torch"].split("+")[0] == cuda_image.build_args["TORCH_VERSION"]
    assert info["cuda"], f"torch {info['torch']} in the CUDA image is a CPU build"
    floor = tuple(int(x) for x in hw.cuda_version.split("."))
    built_for = tuple(int(x) for x in info["cuda"].split("."))
    assert built_for >= floor, (info["cuda"], hw.cuda_version)
    # pods are matched on the floor: a host whose driver offers just the floor must run this torch
    assert built_for[:2] <= floor, f"torch needs CUDA {info['cuda']}, above the profile's floor {hw.cuda_version}"
    wanted = hw.cuda_arch_list.replace(";", " ").split()
    assert all(covers(a, info["arch_list"]) for a in wanted), (wanted, info["arch_list"])
    assert info["env_arch"] == hw.cuda_arch_list
    assert info["fused_adam"] and info["nvcc_on_path"] is False  # prebuilt; nvcc did not stay behind

    # trainpod's own code is the small last layers (a code change rebuilds only those)
    history = [h for h in client.api.history(cuda_image.tag) if h["Size"] > 0]
    code_layers = [h for h in history[:2] if "/opt/trainpod/src" in h["CreatedBy"]]
    assert code_layers and sum(h["Size"] for h in code_layers) < 30e6, [(h["CreatedBy"][:80], h["Size"])
                                                                         for h in history[:3]]


def test_deepspeed_cpu_adam_is_prebuilt_and_steps_on_cpu(docker_env, cuda_image) -> None:
    """CPU Adam (ZeRO offload with DeepSpeed's optimizer) is compiled in with portable flags and works here, on
    this CPU; the image carries no compiler (nothing JIT-builds on a pod) and no nvcc."""
    script = ("import shutil, torch; from deepspeed.git_version_info import installed_ops as o; "
              "from deepspeed.ops.adam import DeepSpeedCPUAdam; "
              "p = torch.nn.Parameter(torch.ones(64)); opt = DeepSpeedCPUAdam([p], lr=0.1); "
              "p.grad = torch.ones(64); opt.step(); "
              "print('CPUADAM', bool(o['cpu_adam']), float(p.detach().max()), shutil.which('g++'), shutil.which('nvcc'))")
    # DeepSpeed uses a prebuilt op only under the accelerator it was built for: cuda, as on a GPU pod
    out = _run(docker_env.client(), cuda_image.tag, ["python", "-c", script], environment={"DS_ACCELERATOR": "cuda"})
    line = next((ln for ln in out.splitlines() if ln.startswith("CPUADAM ")), None)
    assert line is not None, out[-2000:]
    _, prebuilt, value, gxx, nvcc = line.split()
    assert prebuilt == "True" and float(value) < 1.0  # the step moved the weights
    assert gxx == "None" and nvcc == "None"


def test_cuda_image_trains_the_smoke_preset_on_cpu_through_its_entrypoint(docker_env, cuda_image, image_tree,
                                                                          make_spec, tmp_path) -> None:
    from trainpod.backends.docker import DockerBackend
    from trainpod.settings import load_settings

    out = tmp_path / "out"
    run_id = f"cuda-image-smoke-{os.getpid()}-{int(time.time())}"
    spec = make_spec("smoke", run_id=run_id, dataset=str(image_tree / "profiles" / "data" / "sample"),
                     output=str(out), image=cuda_image.tag, overrides={"max_steps": 6, "eval_steps": 6})
    settings = load_settings()
    backend = DockerBackend()
    handle = backend.submit(backend.plan(spec, settings), settings)
    try:
        deadline = time.monotonic() + 600
        while backend.status(handle).state in ("pending", "running") and time.monotonic() < deadline:
            time.sleep(1)
        st = backend.status(handle)
        assert st.state == "succeeded" and st.step == 6, (st, "\n".join(backend.logs(handle))[-3000:])
        assert (out / "DONE").is_file() and (out / "metadata.json").is_file()
    finally:
        for c in docker_env.client().containers.list(all=True, filters={"name": run_id}):
            c.remove(force=True)


def test_cuda_image_push_to_the_loopback_registry_and_pull_back(docker_env, cuda_image, image_tree) -> None:
    repo = f"trainpod-cuda-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(registry=docker_env.registry, image_repository=repo)
    hw = load_catalog(use_cwd=False).get("hardware", HARDWARE)
    plan = images.image_plan(HARDWARE, hw, settings, base_image=docker_env.base_image, root=image_tree)
    client = docker_env.client()
    assert images.build(plan, client=client) is False  # same content: tagged, not rebuilt
    assert images.push(plan, settings, client=client) is True
    with urllib.request.urlopen(f"http://{docker_env.registry}/v2/{repo}/tags/list", timeout=10) as resp:
        assert json.load(resp)["tags"] == [plan.tag_name]
    layers = client.images.get(cuda_image.tag).attrs["RootFS"]["Layers"]
    client.images.remove(plan.tag)
    pulled = client.images.pull(plan.repository, tag=plan.tag_name)
    assert pulled.attrs["RootFS"]["Layers"] == layers
    client.images.remove(plan.tag)
