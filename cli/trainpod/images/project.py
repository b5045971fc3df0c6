"""A custom job's project layer on a hardware image: which files (the project's .dockerignore/.gitignore
rules), the content-addressed tag, the build context."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO

from pydantic import Field

from trainpod.errors import ConfigError
from trainpod.images.context import _write_tar
from trainpod.images.fetch import _fetch_helpers, pip_sources
from trainpod.images.layout import IMAGES_DIR
from trainpod.images.plan import _BuildPlan, _image_tag, context_hashes
from trainpod.settings import Settings

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
    fetch_args: dict[str, str] = Field(default_factory=dict, description="pip's indexes for the deps stage")


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
                            ca_bundle=ca, wheelhouse=wheels, fetch_args=pip_sources(settings).build_args())


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
