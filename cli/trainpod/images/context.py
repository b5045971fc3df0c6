"""Build contexts as deterministic tar streams (sorted, fixed mtimes and owners): the same tree always hashes
and caches the same."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from trainpod.images.layout import FIXED_MTIME
from trainpod.images.plan import ImagePlan, _context_entries


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
