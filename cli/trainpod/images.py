"""Image plans: which Dockerfile, which build args, which files, which content-addressed tag; build and push.

Why content addressing: the tag is ``<registry>/<repository>:<flavor>-<hash12>`` where the hash covers the
Dockerfile, the dependency lock, every source file and every build arg. So ``build`` is a no-op when nothing
changed (the tag already exists), ``push`` is skipped when the registry already has the tag, and a RunSpec that
names an image names exactly the code it runs.

Why trainpod assembles the build context itself (instead of ``docker build .``): the context must be small and
deterministic — only pyproject, ``cli/``, ``trainer/``, ``profiles/`` and the lock, in sorted order with fixed
mtimes and owners — so the same tree always hashes and caches the same, wherever it is checked out.

Build-time helpers (an extra CA bundle for TLS-intercepting proxies, a local wheelhouse for air-gapped hosts)
go into the context under ``build/`` and are used only by the builder stage; the final stage copies the
virtualenv, so they never reach the image. They do not enter the tag either: they change how the image is
fetched, not what it contains.

:func:`image_plan` is pure (reads files, never talks to an engine); :func:`build` and :func:`push` use the
docker SDK, imported lazily so ``trainpod --help`` stays light.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import re
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field

from trainpod import __version__
from trainpod.config.schema import Hardware
from trainpod.errors import ConfigError, TrainpodError, UnsupportedError
from trainpod.settings import Settings
from trainpod.spec import git_commit

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "images"
LOCK_FILE = IMAGES_DIR / "requirements.lock"
# What the container needs: the trainer's deps and S3 access. The launcher-only SDKs (docker, runpod) stay out.
IMAGE_EXTRAS = ("train", "s3")
# Local base image bootstrapped by scripts/docker-up.sh (Debian + Python), for CPU and CUDA images alike: PyPI's
# torch wheels for Linux bring the CUDA runtime as nvidia-* wheels, so a CUDA image needs no nvidia/cuda base.
# CI on GitHub overrides it with python:3.11-slim.
DEFAULT_CPU_BASE = DEFAULT_BASE = "trainpod/base:bookworm"
CUDA_LOCK_FILE = IMAGES_DIR / "requirements.cuda.lock"
# What only the CUDA image adds (DeepSpeed, whose fused/CPU Adam ops are compiled into it).
CUDA_EXTRAS = ("deepspeed",)
# Source trees copied into the image (relative to the repo root) and what never goes in.
SOURCE_ROOTS = ("pyproject.toml", "README.md", "cli/trainpod", "trainer/trainpod_trainer", "profiles")
_EXCLUDE_PARTS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".git"}
_EXCLUDE_SUFFIXES = (".pyc", ".pyo", ".egg-info", ".tmp", ".swp", "~")
FIXED_MTIME = 1_700_000_000  # any constant: the context must not depend on checkout time
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


# --------------------------------------------------------------------------------------------- the lock
def _closure(extras: tuple[str, ...], root: Path, *, with_base: bool = True) -> dict[str, str]:
    """``{name: installed version}`` for the dependency closure of ``trainpod[extras]`` (markers evaluated for the
    image: Linux, this Python), torch included."""
    import importlib.metadata as md

    import tomllib  # py3.11+; only used when regenerating the lock
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    env = {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}

    pins: dict[str, str] = {}
    todo: list[Requirement] = [Requirement(r) for r in project["dependencies"]] if with_base else []
    for extra in extras:
        todo += [Requirement(r) for r in optional[extra]]
    while todo:
        req = todo.pop()
        if req.marker and not req.marker.evaluate({**env, "extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name == "trainpod":  # self-references such as trainpod[s3]
            for sub in req.extras:
                todo += [Requirement(r) for r in optional[sub]]
            continue
        if name in pins:
            continue
        try:
            pins[name] = md.version(req.name).split("+")[0]
        except md.PackageNotFoundError:
            raise ConfigError(f"cannot derive the image lock: '{req.name}' is not installed here",
                              "install the dev and deepspeed extras (pip install -e .[dev,deepspeed]) and "
                              "regenerate") from None
        for sub in md.requires(req.name) or []:
            sreq = Requirement(sub)
            wanted = [e for e in req.extras] or [""]
            if not sreq.marker or any(sreq.marker.evaluate({**env, "extra": e}) for e in wanted):
                todo.append(Requirement(str(sreq).split(";")[0]))
    return pins


def derive_lock(extras: tuple[str, ...] = IMAGE_EXTRAS, root: Path = REPO_ROOT) -> str:
    """A fully pinned requirements file for the image, derived from pyproject + the tested environment.

    Walks the dependency closure of ``trainpod[extras]`` through the installed distributions' metadata
    (markers evaluated for the image: Linux, this Python), pinning each to the version installed here — the
    versions the test suite ran against. torch is left out: the Dockerfiles install the right torch build
    (CPU wheel / CUDA build) in its own layer first. Regenerate with ``python -m trainpod.images lock``.
    """
    pins = _closure(extras, root)
    torch_version = pins.pop("torch")
    lines = [
        "# Generated by `python -m trainpod.images lock` from pyproject.toml extras "
        f"{list(extras)} and the tested environment.",
        f"# torch=={torch_version} is installed by the Dockerfile first (the CPU wheel, or the CUDA build).",
        f"# torch-version: {torch_version}",
    ]
    lines += [f"{name}=={version}" for name, version in sorted(pins.items())]
    return "\n".join(lines) + "\n"


def derive_cuda_lock(root: Path = REPO_ROOT) -> str:
    """What the CUDA image installs on top of :func:`derive_lock`'s pins: DeepSpeed and what it alone needs."""
    base = _closure(IMAGE_EXTRAS, root)
    extra = {k: v for k, v in _closure(CUDA_EXTRAS, root, with_base=False).items() if k not in base}
    lines = ["# Generated by `python -m trainpod.images lock`: the CUDA image's additions to requirements.lock "
             f"(extras {list(CUDA_EXTRAS)}).",
             "# DeepSpeed is built from source in the image with its fused Adam and CPU Adam ops compiled in."]
    lines += [f"{name}=={version}" for name, version in sorted(extra.items())]
    return "\n".join(lines) + "\n"


def torch_version(lock_text: str) -> str:
    m = re.search(r"^# torch-version: (\S+)$", lock_text, re.M)
    if not m:
        raise ConfigError(f"{LOCK_FILE}: no '# torch-version:' line", "regenerate: python -m trainpod.images lock")
    return m.group(1)


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


def _default_ca_bundle() -> str | None:
    for var in ("TRAINPOD_BUILD_CA_BUNDLE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        val = os.environ.get(var)
        if val and Path(val).is_file():
            return val
    return None


def _default_wheelhouse() -> str | None:
    val = os.environ.get("TRAINPOD_BUILD_WHEELHOUSE") or os.environ.get("PIP_FIND_LINKS")
    return val if val and Path(val).is_dir() else None


class PipSources(BaseModel):
    """Where the build's pip fetches packages: this machine's own pip configuration (``pip config list``: files
    and ``PIP_*`` variables), or the ``TRAINPOD_BUILD_*`` settings, which replace it. Never a built-in host.

    Remote indexes/find-links reach the build as build args (the builder stage writes them into its own
    ``/etc/pip.conf``, which the final image does not copy). Local ones (a ``find-links`` directory, a
    ``file://`` index) cannot be seen from inside a build: the wheels the image needs are copied from them into
    the context's ``build/wheels``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    origin: str = Field(description="'settings' (TRAINPOD_BUILD_*) or 'pip config'")
    index_url: str | None = None
    extra_index_urls: list[str] = Field(default_factory=list)
    find_links: list[str] = Field(default_factory=list, description="remote find-links URLs")
    local: list[str] = Field(default_factory=list, description="local wheel dirs / file:// indexes")
    cert: str | None = None

    def build_args(self) -> dict[str, str]:
        return {"INDEX_URL": self.index_url or "", "EXTRA_INDEX_URLS": " ".join(self.extra_index_urls),
                "FIND_LINKS": " ".join(self.find_links)}


def pip_config() -> dict[str, str]:
    """``pip config list`` of the Python running trainpod, as ``{option: value}`` with pip's precedence
    (``PIP_*`` variables > ``[install]`` > ``[global]``). Empty when pip is missing or fails. Asked once per
    process and set of ``PIP_*`` variables (a plan is made several times per launch)."""
    return dict(_pip_config(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("PIP_")))))


@functools.lru_cache(maxsize=8)
def _pip_config(_pip_env: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    import subprocess
    import sys

    try:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    rank = {"global": 0, "install": 1, ":env:": 2}
    best: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        m = re.match(r"^([^.=]+)\.([a-z0-9-]+)='(.*)'$", line.strip())
        if not m or m.group(1) not in rank:
            continue
        r = rank[m.group(1)]
        if m.group(2) not in best or best[m.group(2)][0] <= r:
            best[m.group(2)] = (r, m.group(3))
    return tuple((k, v) for k, (_, v) in best.items())


def _local_path(url: str) -> str | None:
    """The directory a ``file://`` URL or plain path names (None for a remote URL)."""
    from urllib.parse import unquote, urlparse

    if url.startswith("file:"):
        return unquote(urlparse(url).path)
    return None if re.match(r"^[a-z][a-z0-9+.-]*://", url, re.I) else url


def pip_sources(settings: Settings | None = None) -> PipSources:
    """Where the image build fetches packages from (see :class:`PipSources`)."""
    settings = settings or Settings()
    if settings.build_index_url or settings.build_extra_index_urls or settings.build_find_links:
        origin, index = "settings", settings.build_index_url
        extra = (settings.build_extra_index_urls or "").split()
        links = (settings.build_find_links or "").split()
        cert = None
    else:
        conf = pip_config()
        origin, index = "pip config", conf.get("index-url")
        extra, links = conf.get("extra-index-url", "").split(), conf.get("find-links", "").split()
        cert = conf.get("cert")
    local: list[str] = []
    remote_extra: list[str] = []
    if index and _local_path(index) is not None:
        local.append(_local_path(index) or "")
        index = None
    for url in extra:
        (local.append(_local_path(url) or "") if _local_path(url) is not None else remote_extra.append(url))
    remote_links = [u for u in links if _local_path(u) is None]
    local = [p for p in [*(_local_path(u) or "" for u in links if _local_path(u) is not None), *local]
             if p and Path(p).is_dir()]
    return PipSources(origin=origin, index_url=index, extra_index_urls=remote_extra, find_links=remote_links,
                      local=list(dict.fromkeys(local)), cert=cert if cert and Path(cert).is_file() else None)


def _image_tags() -> set[Any]:
    """Wheel tags the images' Python can install: CPython 3.11 on glibc 2.36 (Debian bookworm), this arch."""
    import platform

    from packaging import tags

    arch = platform.machine()
    plats = [f"manylinux_2_{m}_{arch}" for m in range(36, 4, -1)]
    plats += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}", f"linux_{arch}"]
    return set(tags.cpython_tags((3, 11), platforms=plats)) | set(tags.compatible_tags((3, 11), "cp311", plats))


def _wheel_candidates(source: Path, name: str) -> list[Path]:
    """Wheel files for ``name`` in a flat directory (find-links) or a PEP 503 simple index on disk."""
    from packaging.utils import canonicalize_name

    flat = [w for w in source.glob("*.whl") if canonicalize_name(w.name.split("-")[0]) == name]
    page = source / name / "index.html"
    if page.is_file():
        for href in re.findall(r'href="([^"#]+)', page.read_text(encoding="utf-8", errors="replace")):
            target = (page.parent / _local_path(href)).resolve() if _local_path(href) is not None else None
            if target is not None and target.suffix == ".whl" and target.is_file():
                flat.append(target)
    return flat


def resolve_wheelhouse(pins: dict[str, str], sources: Iterable[str], *, flavor: str) -> list[Path]:
    """The wheels, from local ``sources`` (in order), that install ``pins`` ({name: version}) in the image.

    torch: a CPU image takes a ``+cpu`` (or unlabelled) wheel; a CUDA image never takes a ``+cpu`` one — a find-links
    directory holding the CPU wheel must not turn the CUDA image into a CPU one (``torch==2.13.0`` matches
    ``2.13.0+cpu``), so without a local CUDA wheel torch comes from the index."""
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
    from packaging.version import Version

    supported = _image_tags()
    found: dict[str, Path] = {}
    for src in sources:
        root = Path(src)
        for name, version in pins.items():
            name = canonicalize_name(name)
            if name in found:
                continue
            for wheel in sorted(_wheel_candidates(root, name)):
                try:
                    _, ver, _, wtags = parse_wheel_filename(wheel.name)
                except InvalidWheelFilename:
                    continue
                if Version(ver.public) != Version(version) or not (set(wtags) & supported):
                    continue
                local = ver.local or ""
                if name == "torch" and (local.startswith("cu") if flavor == "cpu" else local == "cpu"):
                    continue
                found[name] = wheel
                break
    return [found[n] for n in sorted(found)]


def _fetch_helpers(ca_bundle: str | None, wheelhouse: str | None) -> tuple[str | None, str | None]:
    """The extra CA bundle and wheelhouse a build passes to pip: the given ones ("" = none), else the defaults."""
    ca = ca_bundle if ca_bundle is not None else _default_ca_bundle()
    if ca and not Path(ca).is_file():
        raise ConfigError(f"CA bundle {ca}: not a file", "pass --ca-bundle PATH or unset TRAINPOD_BUILD_CA_BUNDLE")
    return ca, wheelhouse if wheelhouse is not None else _default_wheelhouse()


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


def _lock_pins(root: Path, flavor: str) -> dict[str, str]:
    """``{name: version}`` of the image's lock files (the CUDA image adds requirements.cuda.lock)."""
    pins: dict[str, str] = {}
    for lock in ("requirements.lock", "requirements.cuda.lock") if flavor == "cuda" else ("requirements.lock",):
        path = root / "images" / lock
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                name, sep, version = line.split("#")[0].strip().partition("==")
                if sep:
                    pins[name.strip()] = version.strip()
    return pins


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


def write_context(plan: ImagePlan, out: IO[bytes]) -> int:
    """Write the deterministic build context tar (fixed mtimes/owners, sorted) to ``out``; returns bytes."""
    entries = _context_entries(Path(plan.root), plan.flavor, plan.ca_bundle, [Path(w) for w in plan.wheelhouse])
    return _write_tar(out, entries)


def _write_tar(out: IO[bytes], entries: list[tuple[str, Path | bytes]], dirs: Iterable[str] = ()) -> int:
    """A build context tar: the entries' parent directories (and ``build/{ca,wheels}``, which the Dockerfiles
    COPY even when empty), then the entries in order: bytes, or a host file (its symlink, its exec bit except
    under ``build/``). Fixed mtimes and owners, so the same inputs give the same bytes."""
    all_dirs = {"build", "build/ca", "build/wheels", *dirs}
    for name, _ in entries:
        parts = name.split("/")[:-1]
        all_dirs |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(all_dirs):
            tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755))
        for name, source in entries:
            if isinstance(source, bytes):
                data, mode = source, 0o644
            elif source.is_symlink():
                info = _tarinfo(name, tarfile.SYMTYPE, 0o777)
                info.linkname = os.readlink(source)
                tar.addfile(info)
                continue
            else:
                data = source.read_bytes()
                mode = 0o755 if os.access(source, os.X_OK) and not name.startswith("build/") else 0o644
            info = _tarinfo(name, tarfile.REGTYPE, mode)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.tell()


def _tarinfo(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# --------------------------------------------------------------------------------------------- engine
def docker_client() -> Any:
    """A docker SDK client from the environment (``DOCKER_HOST``), with a clear error when there is no engine."""
    from trainpod import deps

    deps.require("docker")
    import docker

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine"
        raise TrainpodError(f"cannot reach the Docker engine: {exc}",
                            "start it (sudo bash scripts/docker-up.sh) or set DOCKER_HOST") from None
    return client


def image_exists(client: Any, tag: str) -> bool:
    import docker.errors

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def build(plan: ImagePlan, *, client: Any = None, on_line: Callable[[str], None] | None = None,
          force: bool = False, no_cache: bool = False) -> bool:
    """Build ``plan.tag`` unless it exists. Returns True when an engine build ran.

    Uses the classic builder with host networking (no bridge networks here); engine errors are raised
    verbatim. ``on_line`` receives every line of build output (the CLI feeds a rich progress display).
    ``force`` builds even when the tag exists; ``no_cache`` also ignores the layer cache (a cold build).
    """
    client = client or docker_client()
    if not force and image_exists(client, plan.tag):
        return False
    if not force:
        # the same content under another name (e.g. built before TRAINPOD_REGISTRY was set): just tag it
        same = [i for i in client.images.list(filters={"label": f"{CONTENT_LABEL}={plan.content_hash}"})
                if PROJECT_CONTENT_LABEL not in (i.labels or {})]  # project layers inherit the base's labels
        if same:
            same[0].tag(plan.repository, plan.tag_name)
            return False
    with tempfile.TemporaryFile() as ctx:
        write_context(plan, ctx)
        ctx.seek(0)
        stream = client.api.build(
            fileobj=ctx, custom_context=True, tag=plan.tag, buildargs=plan.build_args, network_mode="host",
            rm=True, forcerm=True, pull=False, decode=True, dockerfile="Dockerfile", nocache=no_cache,
        )
        _follow_build(stream, "docker build", on_line)
    _check_built(client, plan.tag)
    return True



HARDWARE_LABEL = "dev.trainpod.hardware"


def prune(plan: ImagePlan, *, client: Any = None) -> dict[str, list[str]]:
    """Remove this hardware profile's older images from the local engine: ``<repository>:<flavor>-…`` tags whose
    image carries the profile's label and another content hash than ``plan``'s (project layers are left).

    Every code change makes a new content-addressed tag, so without this a dev box keeps them all. The current
    tag is never touched; an image a container (running or stopped) still uses is kept, and reported as kept;
    layers shared with the current image stay (the engine only frees what nothing references). Registry tags
    are left alone: a teammate's pod may still pull them. Returns ``{"removed": [...], "kept": [...]}``.
    """
    import docker.errors

    client = client or docker_client()
    removed: list[str] = []
    kept: list[str] = []
    for image in client.images.list(filters={"label": f"{HARDWARE_LABEL}={plan.hardware_name}"}):
        labels = image.labels or {}
        if labels.get(CONTENT_LABEL) in (None, plan.content_hash):
            continue
        for tag in sorted(image.tags):
            repo, _, name = tag.rpartition(":")
            if repo != plan.repository or not name.startswith(f"{plan.flavor}-"):
                continue  # another repository, or a project layer (``project-…``, built on a pinned base)
            try:
                client.images.remove(tag)  # untags; the engine deletes layers nothing else references
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: a container uses it
                    raise
                kept.append(f"{tag} (used by a container)")
                continue
            removed.append(tag)
    return {"removed": removed, "kept": kept}


_TAIL_LINES = 15


def _follow_build(stream: Any, what: str, on_line: Callable[[str], None] | None) -> None:
    """Consume an engine build stream: lines to ``on_line``, the engine's error verbatim with the last output."""
    tail: list[str] = []
    for event in stream:
        if "error" in event:
            detail = event.get("errorDetail", {}).get("message") or event["error"]
            raise TrainpodError(f"{what} failed: {detail.strip()}",
                                "last output:\n" + "".join(tail[-_TAIL_LINES:]) if tail else None)
        text = event.get("stream")
        if text:
            tail.append(text)
            del tail[:-_TAIL_LINES]
            if on_line:
                for line in text.splitlines():
                    if line.strip():
                        on_line(line)


def _check_built(client: Any, tag: str) -> None:
    if not image_exists(client, tag):
        raise TrainpodError(f"docker build finished but {tag} does not exist", "the engine's log may say why")


def _auth(settings: Settings) -> dict[str, str] | None:
    if settings.registry_username and settings.registry_password:
        return {"username": settings.registry_username, "password": settings.registry_password.get_secret_value()}
    return None


def registry_has(client: Any, tag: str, settings: Settings) -> bool:
    """Whether the registry already holds ``tag`` (asks the registry through the engine)."""
    import docker.errors

    try:
        client.images.get_registry_data(tag, auth_config=_auth(settings))
    except (docker.errors.NotFound, docker.errors.APIError):
        return False
    return True


def push(plan: ImagePlan | ProjectImagePlan, settings: Settings, *, client: Any = None,
         on_line: Callable[[str], None] | None = None) -> bool:
    """Push ``plan.tag`` (a hardware image, or a job's project image); skipped (returns False) when the
    registry already has it."""
    if not settings.registry:
        raise ConfigError("no registry configured", "set TRAINPOD_REGISTRY (e.g. ghcr.io/you or 127.0.0.1:5000)")
    client = client or docker_client()
    if not image_exists(client, plan.tag):
        hint = (f"run: trainpod build --hardware {plan.hardware_name}" if isinstance(plan, ImagePlan)
                else "launch the job again: it builds the project image first")
        raise TrainpodError(f"image {plan.tag} is not built", hint)
    if registry_has(client, plan.tag, settings):
        return False
    secret = settings.registry_password.get_secret_value() if settings.registry_password else None
    for event in client.api.push(plan.repository, tag=plan.tag_name, stream=True, decode=True,
                                 auth_config=_auth(settings)):
        if "error" in event:
            detail = event.get("errorDetail", {}).get("message") or event["error"]
            if secret:
                detail = detail.replace(secret, "***")
            raise TrainpodError(f"docker push failed: {detail.strip()}",
                                "check TRAINPOD_REGISTRY_USERNAME / TRAINPOD_REGISTRY_PASSWORD")
        if on_line and event.get("status"):
            on_line(f"{event.get('id', '')} {event['status']}".strip())
    return True


def resolve_hardware(target: str | None, hardware: str | None, config: str | None = None) -> tuple[str, Hardware]:
    """``--hardware NAME`` or a preset's hardware (``trainpod build PRESET``); default: the ``cpu`` profile."""
    from trainpod.config.loader import load_catalog

    catalog = load_catalog(config)
    if hardware and target:
        raise ConfigError(f"give either a preset ({target!r}) or --hardware ({hardware!r}), not both")
    if target and target not in catalog.table("hardware"):
        name = catalog.get("presets", target).hardware
    else:
        name = hardware or target or "cpu"
    return name, catalog.get("hardware", name)


def build_and_push(target: str | None, *, hardware: str | None = None, settings: Settings, config: str | None = None,
                   base_image: str | None = None, ca_bundle: str | None = None, wheelhouse: str | None = None,
                   do_build: bool = True, do_push: bool = False, dry_run: bool = False, do_prune: bool = False,
                   on_line: Callable[[str], None] | None = None) -> dict[str, Any]:
    """What ``trainpod build`` / ``trainpod push`` do: plan, then (unless dry-run) build and/or push.

    Returns the plan's display plus what happened (``built``/``pushed``: True, False = already there).
    """
    name, hw = resolve_hardware(target, hardware, config)
    plan = image_plan(name, hw, settings, base_image=base_image, ca_bundle=ca_bundle, wheelhouse=wheelhouse)
    result: dict[str, Any] = {"plan": plan.display()}
    if dry_run:
        return result
    client = docker_client()
    if do_build:
        result["built"] = build(plan, client=client, on_line=on_line)
    if do_push:
        result["pushed"] = push(plan, settings, client=client, on_line=on_line)
    if do_prune:
        result["pruned"] = prune(plan, client=client)
    return result


# --------------------------------------------------------------------------------------------- project layer
PROJECT_DOCKERFILE = IMAGES_DIR / "Dockerfile.project"
PROJECT_CONTENT_LABEL = "dev.trainpod.project-content-hash"
_ALWAYS_IGNORED = (".git", "__pycache__", "*.pyc", ".venv", ".trainpod")


class ProjectImagePlan(_BuildPlan):
    """A user's project (``[jobs.NAME] project_dir``) as a layer on a hardware image, as data."""

    base_image: str
    project_dir: str
    requirements: str | None
    context_files: list[str]


def _ignore_patterns(project: Path) -> list[str]:
    """``.dockerignore`` if present (what ``docker build`` would honour), else ``.gitignore``."""
    patterns = list(_ALWAYS_IGNORED)
    for name in (".dockerignore", ".gitignore"):
        f = project / name
        if f.is_file():
            patterns += [ln.strip() for ln in f.read_text(encoding="utf-8").splitlines()
                         if ln.strip() and not ln.lstrip().startswith("#")]
            break
    return patterns


def _ignored(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    """gitignore-style matching, last match wins: ``!neg``, ``dir/``, ``/anchored``, ``**``, bare names at any depth."""
    import fnmatch

    result = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        if pat.endswith("/"):
            if not is_dir:
                continue
            pat = pat.rstrip("/")
        pat = pat.replace("**/", "*").replace("/**", "/*")
        if "/" in pat.lstrip("/"):
            hit = fnmatch.fnmatchcase(rel, pat.lstrip("/"))
        elif pat.startswith("/"):
            hit = fnmatch.fnmatchcase(rel, pat[1:])
        else:
            hit = fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pat)
        if hit:
            result = not neg
    return result


def project_files(project: Path) -> list[tuple[str, Path]]:
    """(path relative to the project, host path) of every file that goes into the image, sorted."""
    patterns = _ignore_patterns(project)
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(project, followlinks=False):
        base = Path(dirpath)
        rel_base = base.relative_to(project).as_posix()
        prefix = "" if rel_base == "." else rel_base + "/"
        dirnames[:] = sorted(d for d in dirnames if not _ignored(prefix + d, True, patterns))
        for name in sorted(filenames):
            if not _ignored(prefix + name, False, patterns):
                out.append((prefix + name, base / name))
    return sorted(out)


def project_image_plan(base_image: str, project_dir: str | os.PathLike[str], requirements: str | None,
                       settings: Settings, *, ca_bundle: str | None = None,
                       wheelhouse: str | None = None) -> ProjectImagePlan:
    """Plan the project layer. Pure. Tag ``<repo>:project-<hash12>``; the hash covers the base tag (itself
    content-addressed), the Dockerfile, the requirements and every project file that is not ignored.

    ``ca_bundle``/``wheelhouse`` (default: the same variables as the hardware image's) help pip install the
    requirements behind a TLS-intercepting proxy or offline; they reach only the deps stage, never the image,
    and are not part of the hash. torch wheels are left out of the context: the hardware image has torch."""
    project = Path(project_dir)
    if not project.is_dir():
        raise ConfigError(f"project_dir {project}: not a directory", "check [jobs.NAME] project_dir")
    if not PROJECT_DOCKERFILE.is_file():
        raise ConfigError(f"{PROJECT_DOCKERFILE}: missing", "trainpod builds project images from a source checkout")
    req_path = project / requirements if requirements else None
    if req_path is not None and not req_path.is_file():
        raise ConfigError(f"requirements file {req_path}: not found", "check [jobs.NAME] requirements")
    files = project_files(project)
    context_hashes[f"project:{project.resolve()}"] += 1
    digest = hashlib.sha256(f"trainpod-project-v1\0{base_image}\0".encode())
    digest.update(PROJECT_DOCKERFILE.read_bytes())
    digest.update(b"\0requirements\0" + (req_path.read_bytes() if req_path else b""))
    for rel, path in files:
        digest.update(f"\0file\0{rel}\0{int(os.access(path, os.X_OK))}\0".encode())
        digest.update(os.readlink(path).encode() if path.is_symlink() else path.read_bytes())
    content_hash = digest.hexdigest()
    tag = _image_tag(settings, f"project-{content_hash[:12]}")
    ca, house = _fetch_helpers(ca_bundle, wheelhouse)
    wheels = sorted(str(w) for w in Path(house).glob("*.whl") if not w.name.startswith("torch-")) if house else []
    build_files = (["build/ca/ca-bundle.crt"] if ca else []) + [f"build/wheels/{Path(w).name}" for w in wheels]
    return ProjectImagePlan(base_image=base_image, project_dir=str(project.resolve()), requirements=requirements,
                            tag=tag, content_hash=content_hash,
                            context_files=build_files + [f"project/{r}" for r, _ in files],
                            ca_bundle=ca, wheelhouse=wheels)


def write_project_context(plan: ProjectImagePlan, out: IO[bytes]) -> int:
    """The project build context tar (deterministic like :func:`write_context`)."""
    project = Path(plan.project_dir)
    req = (project / plan.requirements).read_bytes() if plan.requirements else b""
    entries: list[tuple[str, Path | bytes]] = [("Dockerfile", PROJECT_DOCKERFILE.read_bytes()),
                                               ("requirements.txt", req)]
    if plan.ca_bundle:
        entries.append(("build/ca/ca-bundle.crt", Path(plan.ca_bundle)))
    entries += [(f"build/wheels/{Path(w).name}", Path(w)) for w in plan.wheelhouse]
    entries += [(f"project/{rel}", path) for rel, path in project_files(project)]
    return _write_tar(out, entries, dirs=("project",))


def build_project(plan: ProjectImagePlan, *, client: Any = None, on_line: Callable[[str], None] | None = None) -> bool:
    """Build the project layer unless its tag exists (True when an engine build ran). The base must exist."""
    client = client or docker_client()
    if image_exists(client, plan.tag):
        return False
    if not image_exists(client, plan.base_image):
        raise TrainpodError(f"base image {plan.base_image} is not on this engine",
                            "build the hardware image first: trainpod build --hardware NAME")
    with tempfile.TemporaryFile() as ctx:
        write_project_context(plan, ctx)
        ctx.seek(0)
        stream = client.api.build(fileobj=ctx, custom_context=True, tag=plan.tag, network_mode="host", rm=True,
                                  forcerm=True, pull=False, decode=True, dockerfile="Dockerfile",
                                  buildargs={"BASE_IMAGE": plan.base_image, "CONTENT_HASH": plan.content_hash})
        _follow_build(stream, "project image build", on_line)
    _check_built(client, plan.tag)
    return True


def _main(argv: list[str]) -> int:
    """``python -m trainpod.images lock``: regenerate images/requirements.lock (atomically)."""
    if argv != ["lock"]:
        print("usage: python -m trainpod.images lock")
        return 2
    from trainpod.manifest import atomic_write_bytes

    atomic_write_bytes(LOCK_FILE, derive_lock().encode())
    atomic_write_bytes(CUDA_LOCK_FILE, derive_cuda_lock().encode())
    print(f"wrote {LOCK_FILE} and {CUDA_LOCK_FILE}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
