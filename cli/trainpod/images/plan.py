"""The hardware image's plan, pure: Dockerfile, build args, the files of the context and the
content-addressed tag (reads files, never talks to an engine)."""

from __future__ import annotations

import base64
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trainpod import __version__
from trainpod.config.schema import Hardware
from trainpod.errors import ConfigError, UnsupportedError
from trainpod.images.fetch import _fetch_helpers, pip_sources, resolve_wheelhouse
from trainpod.images.layout import _EXCLUDE_PARTS, _EXCLUDE_SUFFIXES, DEFAULT_BASE, REPO_ROOT, SOURCE_ROOTS
from trainpod.images.lock import _lock_pins, torch_version
from trainpod.settings import Settings
from trainpod.spec import git_commit

CONTENT_LABEL = "dev.trainpod.content-hash"
# How often each build context (hardware:NAME, project:DIR) was read and hashed in this process: a launch plans
# its images once (trainpod.launcher.prepare) and submit reuses the tags. Public so tests can count it.
context_hashes: Counter[str] = Counter()


class _BuildPlan(BaseModel):
    """What every image plan has: the tag it builds (``repository:name``), and the fetch helpers (an extra CA
    bundle, wheels) that only the build stage sees."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str
    content_hash: str
    ca_bundle: str | None = None
    wheelhouse: list[str] = Field(default_factory=list, description="wheels offered to pip in the build stage")

    @property
    def repository(self) -> str:
        return self.tag.rsplit(":", 1)[0]

    @property
    def tag_name(self) -> str:
        return self.tag.rsplit(":", 1)[1]


class ImagePlan(_BuildPlan):
    """Everything ``docker build`` will be given, as data (printed by ``trainpod build --dry-run``)."""

    hardware_name: str
    flavor: str
    dockerfile: str = Field(description="host path of the Dockerfile (sent as 'Dockerfile' in the context)")
    build_args: dict[str, str]
    context_files: list[str] = Field(description="paths inside the build context, sorted")
    root: str = Field(description="repository root the source files are read from")

    def display(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------------------------- planning
def _source_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(path in context, host path) for every source file, without caches and editor droppings."""
    for entry in SOURCE_ROOTS:
        p = root / entry
        if p.is_file():
            yield f"src/{entry}", p
            continue
        if not p.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(p, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDE_PARTS and not d.endswith(_EXCLUDE_SUFFIXES))
            for name in sorted(filenames):
                if name.endswith(_EXCLUDE_SUFFIXES) or name.startswith(".#"):
                    continue
                full = Path(dirpath) / name
                yield f"src/{full.relative_to(root).as_posix()}", full
            # symlinked dirs (cli/trainpod/_defaults -> ../../profiles) are kept as links, not walked
            for d in list(dirnames):
                if (Path(dirpath) / d).is_symlink():
                    dirnames.remove(d)
                    full = Path(dirpath) / d
                    yield f"src/{full.relative_to(root).as_posix()}", full


def _image_tag(settings: Settings, name: str) -> str:
    """``[registry/]repository:name``."""
    registry = (settings.registry or "").rstrip("/")
    return f"{registry + '/' if registry else ''}{settings.image_repository}:{name}"


def copy_source_tree(dst: Path, src: Path = REPO_ROOT) -> Path:
    """Copy what an image is built from (source roots + images/) into ``dst``: a frozen tree to build from,
    so edits to the working tree during a long build or test session do not change the tag."""
    import shutil

    for entry in (*SOURCE_ROOTS, "images"):
        path = src / entry
        if path.is_dir():
            shutil.copytree(path, dst / entry, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        elif path.is_file():
            (dst / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / entry)
    return dst


def hardware_env_arg(hardware_name: str, env: dict[str, str]) -> str:
    """The profile's env as a build arg: base64 of ``export K=V`` lines, so spaces, quotes, ``$`` and
    backticks survive the trip through the Dockerfile untouched (the entrypoint exports each line's value
    literally, never through a shell). Only a newline cannot be carried in a line-based file: refused."""
    for key, value in env.items():
        if "\n" in value or "\r" in value or "\0" in value:
            raise ConfigError(f"hardware.{hardware_name}.env.{key}: a value baked into the image cannot contain "
                              "a newline", "pass multi-line values at run time instead (job env or your shell)")
    text = "".join(f"export {k}={v}\n" for k, v in sorted(env.items()))
    return base64.b64encode(text.encode()).decode() if text else ""


def image_plan(
    hardware_name: str,
    hardware: Hardware,
    settings: Settings,
    *,
    base_image: str | None = None,
    ca_bundle: str | None = None,
    wheelhouse: str | None = None,
    root: Path = REPO_ROOT,
) -> ImagePlan:
    """Plan the image for one hardware profile. Pure: reads the source tree, never an engine.

    Base image precedence: ``base_image`` (``--base-image``) > settings (``TRAINPOD_BASE_IMAGE``) > the profile's
    ``base_image`` > the flavor default. ``ca_bundle``/``wheelhouse`` default to ``PIP_CERT``-style variables.
    """
    if hardware.image == "none":
        raise UnsupportedError(
            f"hardware '{hardware_name}' has image = 'none': {hardware.name} is not reachable from a container",
            "run it with --remote local",
        )
    flavor = hardware.image
    dockerfile = root / "images" / f"Dockerfile.{flavor}"
    lock_path = root / "images" / "requirements.lock"
    for needed in (dockerfile, lock_path, root / "images" / "entrypoint.sh"):
        if not needed.is_file():
            raise ConfigError(f"{needed}: missing (needed to build the {flavor} image)",
                              "trainpod build runs from a source checkout of trainpod (images/ next to cli/)")
    lock_text = lock_path.read_text(encoding="utf-8")
    tv = torch_version(lock_text)

    base = base_image or settings.base_image or hardware.base_image or DEFAULT_BASE
    # torch_index_url (the profile's) changes which torch build goes in: part of the content hash
    args = {"BASE_IMAGE": base, "TORCH_VERSION": tv, "TORCH_INDEX_URL": hardware.torch_index_url or ""}
    if flavor == "cuda":
        args |= {
            "TORCH_CUDA_ARCH_LIST": hardware.cuda_arch_list or "",
            "CUDA_VERSION": hardware.cuda_version or "",
            "HARDWARE_ENV": hardware_env_arg(hardware_name, hardware.env),
        }
    else:
        args["CUDA_VERSION"] = ""
    args |= {"TRAINPOD_VERSION": __version__, "HARDWARE": hardware_name}

    sources = pip_sources(settings)
    ca, _ = _fetch_helpers(ca_bundle if ca_bundle is not None else (settings.build_ca_bundle or sources.cert), "")
    # --wheelhouse DIR: that directory alone ("" = none); else TRAINPOD_BUILD_WHEELHOUSE, then pip's local sources
    if wheelhouse is not None:
        local = [wheelhouse] if wheelhouse else []
    else:
        local = [settings.build_wheelhouse] if settings.build_wheelhouse else []
        local += sources.local
    pins = _lock_pins(root, flavor) | {"torch": tv}
    wheels = resolve_wheelhouse(pins, local, flavor=flavor)

    files = _context_entries(root, flavor, ca, wheels)
    context_hashes[f"hardware:{hardware_name}"] += 1
    digest = hashlib.sha256()
    digest.update(f"trainpod-image-v1\0{flavor}\0".encode())
    for key in sorted(args):
        digest.update(f"arg\0{key}\0{args[key]}\0".encode())
    for name, source in files:
        if name.startswith("build/"):
            continue  # fetch helpers: how deps are fetched, not what the image holds
        digest.update(f"file\0{name}\0".encode())
        digest.update(os.readlink(source).encode() if source.is_symlink() else source.read_bytes())
    # which torch wheel the wheelhouse offers does change the image
    digest.update("\0".join(w.name for w in wheels if w.name.startswith("torch-")).encode())
    content_hash = digest.hexdigest()
    # how packages are fetched (indexes, find-links): not content
    args |= sources.build_args()
    # the commit is a label, not content: two commits with the same tree share one image
    args["GIT_COMMIT"] = git_commit(root) or ""
    args["CONTENT_HASH"] = content_hash

    tag = _image_tag(settings, f"{flavor}-{content_hash[:12]}")
    return ImagePlan(
        hardware_name=hardware_name,
        flavor=flavor,
        dockerfile=str(dockerfile),
        tag=tag,
        content_hash=content_hash,
        build_args=args,
        context_files=sorted(name for name, _ in files),
        ca_bundle=ca,
        wheelhouse=[str(w) for w in wheels],
        root=str(root),
    )


def _context_entries(root: Path, flavor: str, ca: str | None, wheels: list[Path]) -> list[tuple[str, Path]]:
    images = root / "images"
    entries = [
        ("Dockerfile", images / f"Dockerfile.{flavor}"),
        ("entrypoint.sh", images / "entrypoint.sh"),
        ("healthcheck.sh", images / "healthcheck.sh"),
        ("requirements.lock", images / "requirements.lock"),
    ]
    if flavor == "cuda":
        entries.append(("requirements.cuda.lock", images / "requirements.cuda.lock"))
    entries = [(n, p) for n, p in entries if p.is_file()]
    entries += list(_source_files(root))
    if ca:
        entries.append(("build/ca/ca-bundle.crt", Path(ca)))
    entries += [(f"build/wheels/{w.name}", w) for w in wheels]
    return sorted(entries)
