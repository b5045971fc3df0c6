"""The CPU training image on a real Docker engine: build, no-op rebuild, code-only rebuild, push, no secrets.

One image per session (``cpu_image``); the code-change test builds a copy of the tree with one edited file,
which must reuse every layer but trainpod's own small last ones.
"""

from __future__ import annotations

import base64
import contextlib
import json
import tarfile
import urllib.request
import uuid

import pytest

from tests.fixtures.docker_engine import copy_tree
from trainpod import images
from trainpod.config.loader import load_catalog
from trainpod.settings import Settings

pytestmark = pytest.mark.docker

CANARY = "trainpod-canary-" + uuid.uuid4().hex[:12]


def _layers(client, tag: str) -> list[str]:
    return client.images.get(tag).attrs["RootFS"]["Layers"]


def test_cpu_image_contract(docker_env, cpu_image) -> None:
    client = docker_env.client()
    img = client.images.get(cpu_image.tag)
    cfg = img.attrs["Config"]
    assert cfg["User"] == "1000:1000" and cfg["WorkingDir"] == "/workspace"
    assert cfg["Entrypoint"] == ["/usr/local/bin/entrypoint.sh"]
    assert cfg["Cmd"] == ["python", "-m", "trainpod_trainer"]
    assert cfg["Healthcheck"]["Test"] == ["CMD", "/usr/local/bin/healthcheck.sh"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.version"] == cpu_image.build_args["TRAINPOD_VERSION"]
    assert labels["dev.trainpod.hardware"] == "cpu" and labels["dev.trainpod.cuda-version"] == ""
    assert labels["dev.trainpod.content-hash"] == cpu_image.content_hash
    assert "org.opencontainers.image.revision" in labels
    size = img.attrs["Size"]
    assert size <= 1.6e9, f"CPU image is {size / 1e9:.2f} GB (target <= 1.6 GB)"
    # the entrypoint execs: the command is PID 1, so SIGTERM reaches the trainer directly
    out = client.containers.run(cpu_image.tag, ["sh", "-c", "tr '\\0' ' ' </proc/1/cmdline; echo; id -u"],
                                network_mode="host", remove=True).decode()
    assert out.splitlines()[0].startswith("sh -c tr") and out.splitlines()[1] == "1000"
    out = client.containers.run(cpu_image.tag, ["python", "-c", "import trainpod, trainpod_trainer, torch, peft; "
                                                "print(torch.__version__)"], network_mode="host", remove=True)
    assert out.decode().strip() == cpu_image.build_args["TORCH_VERSION"] + "+cpu"


def test_unchanged_tree_is_a_noop_build(docker_env, cpu_image, image_tree) -> None:
    hw = load_catalog(use_cwd=False).get("hardware", "cpu")
    again = images.image_plan("cpu", hw, Settings(), base_image=docker_env.base_image, root=image_tree)
    assert again.tag == cpu_image.tag
    assert images.build(again, client=docker_env.client()) is False


def test_context_is_small_and_deterministic(docker_env, cpu_image, tmp_path) -> None:
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    with first.open("wb") as fa, second.open("wb") as fb:
        images.write_context(cpu_image, fa)
        images.write_context(cpu_image, fb)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert {m.mtime for m in tar.getmembers()} == {images.FIXED_MTIME}
    source = [n for n in names if n.startswith("src/")]
    assert "src/pyproject.toml" in names and "src/cli/trainpod/images/plan.py" in names
    assert "src/trainer/trainpod_trainer/__main__.py" in names and "src/profiles/training.toml" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    with tarfile.open(first) as tar:
        src_bytes = sum(m.size for m in tar.getmembers() if m.name.startswith("src/"))
    assert src_bytes < 20e6, f"source part of the context is {src_bytes / 1e6:.1f} MB for {len(source)} files"


def test_code_only_change_rebuilds_last_layers_without_secrets(docker_env, cpu_image, image_tree, tmp_path,
                                                               monkeypatch) -> None:
    # a copy of the tree with one source file changed (unique per run, so this really builds)
    tree = copy_tree(tmp_path / "tree", src=image_tree)
    changed = tree / "cli" / "trainpod" / "images" / "plan.py"
    changed.write_text(changed.read_text() + f"\n# edited by the test {uuid.uuid4().hex}\n")
    # canary secrets everywhere a careless build could pick them up
    for var in ("TRAINPOD_REGISTRY_PASSWORD", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "RUNPOD_API_KEY"):
        monkeypatch.setenv(var, CANARY)
    settings = Settings(registry_password=CANARY, hf_token=CANARY)
    hw = load_catalog(use_cwd=False).get("hardware", "cpu")
    plan = images.image_plan("cpu", hw, settings, base_image=docker_env.base_image, root=tree)
    assert plan.tag != cpu_image.tag
    client = docker_env.client()
    assert images.build(plan, client=client) is True
    try:
        old, new = _layers(client, cpu_image.tag), _layers(client, plan.tag)
        shared = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
        n_changed = len(new) - shared
        assert n_changed in (1, 2), f"{n_changed} layers changed (want only trainpod's own source layers)"
        history = client.api.history(plan.tag)  # newest first; entries with Size > 0 are the layers
        changed_bytes = sum([h["Size"] for h in history if h["Size"] > 0][:n_changed])
        total = client.images.get(plan.tag).attrs["Size"]
        assert changed_bytes <= 0.01 * total, f"changed layers {changed_bytes} B of {total} B"
        # no secret and no build helper (CA bundle, wheelhouse) anywhere in the image
        assert CANARY not in json.dumps(history) + json.dumps(client.images.get(plan.tag).attrs)
        saved = tmp_path / "image.tar"
        with saved.open("wb") as fh:
            for chunk in client.images.get(plan.tag).save(named=True):
                fh.write(chunk)
        needle = CANARY.encode()
        with tarfile.open(saved) as outer:
            for member in outer.getmembers():
                if not member.isfile():
                    continue
                data = outer.extractfile(member).read()  # type: ignore[union-attr]
                assert needle not in data, f"canary secret found in {member.name}"
                if member.name.endswith("layer.tar"):
                    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as layer:
                        bad = [n for n in layer.getnames() if "tmp/build" in n or n.endswith("ca-bundle.crt")
                               or (n.rsplit("/", 1)[-1].startswith("torch-") and n.endswith(".whl"))]
                        assert not bad, f"build helpers leaked into {member.name}: {bad[:5]}"
    finally:
        client.images.remove(plan.tag, noprune=False)


def test_push_to_loopback_registry_then_skip(docker_env, cpu_image, image_tree) -> None:
    repo = f"trainpod-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(registry=docker_env.registry, image_repository=repo)
    hw = load_catalog(use_cwd=False).get("hardware", "cpu")
    plan = images.image_plan("cpu", hw, settings, base_image=docker_env.base_image, root=image_tree)
    assert plan.tag == f"{docker_env.registry}/{repo}:{cpu_image.tag_name}"
    client = docker_env.client()
    assert images.build(plan, client=client) is False  # same content: tagged, not rebuilt
    assert images.push(plan, settings, client=client) is True
    with urllib.request.urlopen(f"http://{docker_env.registry}/v2/{repo}/tags/list", timeout=10) as resp:
        assert json.load(resp)["tags"] == [cpu_image.tag_name]
    assert images.push(plan, settings, client=client) is False  # registry already has it
    client.images.remove(plan.tag)


def test_build_cli_dry_run_touches_no_engine(monkeypatch, tmp_path) -> None:
    from click.testing import CliRunner

    from trainpod.commands import cli

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    result = CliRunner().invoke(cli, ["build", "smoke", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)["plan"]
    assert plan["tag"].startswith("trainpod:cpu-") and plan["hardware_name"] == "cpu"
    assert "src/trainer/trainpod_trainer/__main__.py" in plan["context_files"]
    result = CliRunner().invoke(cli, ["build", "--hardware", "cloud-2x-rtx-4090", "--dry-run", "--json"])
    plan = json.loads(result.output)["plan"]
    # the same bootstrapped Debian + Python base as the CPU image: torch's wheels bring the CUDA libraries
    assert plan["build_args"]["BASE_IMAGE"] == images.DEFAULT_BASE
    assert "requirements.cuda.lock" in plan["context_files"]
    assert not [f for f in plan["context_files"] if f.startswith("build/wheels/torch-") and "+cpu" in f]
    assert plan["build_args"]["TORCH_CUDA_ARCH_LIST"] == "8.9"
    assert base64.b64decode(plan["build_args"]["HARDWARE_ENV"]).decode() == (
        "export NCCL_IB_DISABLE=1\nexport NCCL_P2P_DISABLE=1\n")
    assert plan["tag"].startswith("trainpod:cuda-")


def test_entrypoint_exports_hardware_env_without_overriding(docker_env, cpu_image, tmp_path) -> None:
    """CUDA images bake the profile's env (NCCL settings) into /etc/trainpod/hardware.env; explicit env wins."""
    hwenv = tmp_path / "hardware.env"
    hwenv.write_text("export NCCL_P2P_DISABLE=1\nexport NCCL_IB_DISABLE=1\n")
    hwenv.chmod(0o644)
    out = docker_env.client().containers.run(
        cpu_image.tag, ["sh", "-c", 'echo "$NCCL_P2P_DISABLE $NCCL_IB_DISABLE"'], network_mode="host", remove=True,
        environment={"NCCL_IB_DISABLE": "0"},
        volumes={str(hwenv): {"bind": "/etc/trainpod/hardware.env", "mode": "ro"}})
    assert out.decode().strip() == "1 0"


def test_baked_hardware_env_survives_spaces_quotes_and_shell_syntax(docker_env, cpu_image, tmp_path) -> None:
    """The CUDA build arg (base64 of export lines) decodes to a file the entrypoint exports literally."""
    from trainpod.errors import ConfigError
    from trainpod.images import hardware_env_arg

    nasty = {"A_SPACE": "two words", "A_QUOTE": "it's \"q\"", "A_SUB": "$(touch /tmp/pwned)", "A_TICK": "`id`"}
    hwenv = tmp_path / "hardware.env"
    hwenv.write_bytes(base64.b64decode(hardware_env_arg("h", nasty)))
    hwenv.chmod(0o644)
    script = 'for v in A_SPACE A_QUOTE A_SUB A_TICK; do eval "printf \'%s\\n\' \\"\\$$v\\""; done; ls /tmp'
    out = docker_env.client().containers.run(
        cpu_image.tag, ["sh", "-c", script], network_mode="host", remove=True,
        volumes={str(hwenv): {"bind": "/etc/trainpod/hardware.env", "mode": "ro"}}).decode().splitlines()
    assert out[:4] == [nasty["A_SPACE"], nasty["A_QUOTE"], nasty["A_SUB"], nasty["A_TICK"]]
    assert "pwned" not in out[4:]
    with pytest.raises(ConfigError, match="cannot contain a newline"):
        hardware_env_arg("h", {"X": "a\nb"})


def test_prune_removes_older_images_of_the_profile_only(docker_env, cpu_image, image_tree) -> None:
    """`trainpod build --prune`: older content-hash tags of this profile go; the current tag, project layers,
    other profiles, other repositories and images a container still uses stay."""
    import io

    import docker

    client = docker_env.client()
    repo = f"trainpod-prune-{uuid.uuid4().hex[:8]}"
    hw = load_catalog(use_cwd=False).get("hardware", "cpu")
    plan = images.image_plan("cpu", hw, Settings(image_repository=repo), base_image=docker_env.base_image,
                             root=image_tree)
    assert images.build(plan, client=client) is False  # the session's image, tagged into this repository

    def derived(tag: str, **labels: str) -> str:
        text = f"FROM {cpu_image.tag}\nLABEL " + " ".join(f'{k}="{v}"' for k, v in labels.items()) + "\n"
        for _ in client.api.build(fileobj=io.BytesIO(text.encode()), tag=tag, network_mode="host", pull=False,
                                  rm=True, decode=True):
            pass
        return client.images.get(tag).id

    old = f"{repo}:cpu-aaaaaaaaaaaa"
    derived(old, **{images.CONTENT_LABEL: "old-1"})
    client.images.get(old).tag(f"{repo}-other", "cpu-aaaaaaaaaaaa")  # the same image in another repository
    in_use = f"{repo}:cpu-bbbbbbbbbbbb"
    derived(in_use, **{images.CONTENT_LABEL: "old-2"})
    project = f"{repo}:project-cccccccccccc"
    derived(project, **{images.CONTENT_LABEL: "old-3"})
    other_profile = f"{repo}:cpu-dddddddddddd"
    derived(other_profile, **{images.CONTENT_LABEL: "old-4", images.HARDWARE_LABEL: "cpu-2proc"})
    container = client.containers.create(in_use, ["true"], network_mode="host")
    try:
        result = images.prune(plan, client=client)
        assert result == {"removed": [old], "kept": [f"{in_use} (used by a container)"]}
        tags = {t for image in client.images.list() for t in image.tags}
        assert plan.tag in tags and in_use in tags and project in tags and other_profile in tags
        assert old not in tags and f"{repo}-other:cpu-aaaaaaaaaaaa" in tags
        assert images.prune(plan, client=client)["removed"] == []  # idempotent
    finally:
        container.remove(force=True)
        for tag in (plan.tag, in_use, project, other_profile, f"{repo}-other:cpu-aaaaaaaaaaaa", old):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(tag, force=True)
