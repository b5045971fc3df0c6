"""Where image builds fetch packages: this machine's pip configuration or the TRAINPOD_BUILD_* settings, never a
host trainpod names itself. Real ``pip config list`` over a PIP_CONFIG_FILE, real image plans (no engine)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from trainpod import images
from trainpod.config.loader import load_catalog
from trainpod.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_HOSTS = ("deb.debian.org", "download.pytorch.org", "pypi.org", "files.pythonhosted.org", "nvidia.com")


def _wheel(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: only the name matters to the planner
    return path


@pytest.fixture
def pip_conf(tmp_path, monkeypatch):
    """A pip config like a corporate machine's: a mirror index, a local file:// index with one pinned wheel,
    a find-links directory holding the CPU torch wheel, and a CA bundle."""
    lock = images.LOCK_FILE.read_text(encoding="utf-8")
    six = next(line for line in lock.splitlines() if line.startswith("six=="))
    torch = images.torch_version(lock)
    index = tmp_path / "index"
    _wheel(index / "files", f"six-{six.split('==')[1]}-py2.py3-none-any.whl")
    (index / "simple" / "six").mkdir(parents=True)
    (index / "simple" / "six" / "index.html").write_text(
        f'<a href="../../files/six-{six.split("==")[1]}-py2.py3-none-any.whl#sha256=00">six</a>')
    links = tmp_path / "wheels"
    _wheel(links, f"torch-{torch}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    _wheel(links, "six-0.0.1-py2.py3-none-any.whl")  # not the pinned version: never picked
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror.corp.invalid/simple\n"
                    f"extra-index-url = file://{index}/simple https://extra.corp.invalid/simple\n"
                    f"find-links = {links}\ncert = {ca}\n")
    for var in ("PIP_FIND_LINKS", "PIP_CERT", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "REQUESTS_CA_BUNDLE",
                "SSL_CERT_FILE", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    return {"links": links, "index": index, "ca": ca, "torch": torch}


def _plan(hardware: str, settings: Settings | None = None) -> images.ImagePlan:
    hw = load_catalog(use_cwd=False).get("hardware", hardware)
    return images.image_plan(hardware, hw, settings or Settings(), base_image="trainpod/base:bookworm")


def test_the_build_uses_what_pip_is_configured_with(pip_conf) -> None:
    plan = _plan("cpu")
    assert plan.build_args["INDEX_URL"] == "https://mirror.corp.invalid/simple"
    assert plan.build_args["EXTRA_INDEX_URLS"] == "https://extra.corp.invalid/simple"  # file:// ones: resolved
    assert plan.ca_bundle == str(pip_conf["ca"])
    names = sorted(Path(w).name for w in plan.wheelhouse)
    assert f"torch-{pip_conf['torch']}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl" in names
    six = [n for n in names if n.startswith("six-")]
    assert six and "0.0.1" not in six[0]  # the lock's pin, from the file:// index
    assert f"build/wheels/{six[0]}" in plan.context_files


def test_a_cuda_image_never_takes_the_cpu_torch_wheel(pip_conf) -> None:
    plan = _plan("cloud-rtx-4090")
    assert not [w for w in plan.wheelhouse if Path(w).name.startswith("torch-")]
    assert plan.build_args["BASE_IMAGE"] == "trainpod/base:bookworm"
    assert "requirements.cuda.lock" in plan.context_files
    assert base64.b64decode(plan.build_args["HARDWARE_ENV"] or "") == b""


def test_trainpod_build_settings_replace_pip_config(pip_conf, tmp_path) -> None:
    other = tmp_path / "other-wheels"
    _wheel(other, f"torch-{pip_conf['torch']}+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    settings = Settings(build_index_url="https://set.corp.invalid/simple", build_find_links=str(other))
    plan = _plan("cpu", settings)
    assert plan.build_args["INDEX_URL"] == "https://set.corp.invalid/simple"
    assert plan.build_args["EXTRA_INDEX_URLS"] == ""
    assert [Path(w).parent for w in plan.wheelhouse] == [other]  # pip config's sources are not read


def test_fetch_sources_do_not_change_the_tag(pip_conf) -> None:
    """How packages are fetched is not what the image holds: another mirror, the same content hash."""
    first = _plan("cpu")
    second = _plan("cpu", Settings(build_index_url="https://other.corp.invalid/simple",
                                   build_find_links=str(pip_conf["links"])))
    assert first.build_args["INDEX_URL"] != second.build_args["INDEX_URL"]
    assert first.tag == second.tag


def test_no_public_package_host_is_written_in_the_images_or_their_planner() -> None:
    paths = [*sorted((ROOT / "images").iterdir()), *sorted((ROOT / "cli" / "trainpod" / "images").glob("*.py"))]
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert not [h for h in PUBLIC_HOSTS if h in text], path


def test_project_layers_use_the_same_package_sources(pip_conf, tmp_path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('hi')\n")
    plan = images.project_image_plan("trainpod:cpu-0123456789ab", project, None, Settings())
    assert plan.fetch_args["INDEX_URL"] == "https://mirror.corp.invalid/simple"
    assert plan.fetch_args["EXTRA_INDEX_URLS"] == "https://extra.corp.invalid/simple"
    other = images.project_image_plan("trainpod:cpu-0123456789ab", project, None,
                                      Settings(build_index_url="https://set.corp.invalid/simple"))
    assert other.fetch_args["INDEX_URL"] == "https://set.corp.invalid/simple" and other.tag == plan.tag
