"""How the image's dependencies are fetched (pip config, indexes, find-links, a CA bundle, a local wheelhouse):
build helpers that change how an image is fetched, never what it holds, so they stay out of the tag."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trainpod.errors import ConfigError
from trainpod.settings import Settings


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
