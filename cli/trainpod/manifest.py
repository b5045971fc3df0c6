"""Manifests: the only mark that a checkpoint (or a pushed dataset) is complete.

A manifest lists every file of a directory with its size and sha256. It is written last, atomically
(temp name, fsync, rename), so a directory without a valid manifest is by definition partial. Used
for local checkpoints by the trainer and for remote ones by ``trainpod.storage``. Pure stdlib.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
CHECKPOINT_RE = re.compile(r"^step-(\d{8})$")
_BUF = 1 << 20


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def checkpoint_step(name: str) -> int | None:
    m = CHECKPOINT_RE.match(name)
    return int(m.group(1)) if m else None


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_BUF):
            h.update(chunk)
    return h.hexdigest()


def iter_files(directory: Path) -> Iterable[Path]:
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".tmp-"):
            yield p


def build_manifest(directory: str | os.PathLike[str], **extra: Any) -> dict[str, Any]:
    d = Path(directory)
    files = [
        {"path": p.relative_to(d).as_posix(), "size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in iter_files(d)
    ]
    return {
        "version": MANIFEST_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
        **extra,
    }


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 over the (path, size, sha256) list: identifies the content, not when it was made."""
    canon = json.dumps(
        sorted((f["path"], f["size"], f["sha256"]) for f in manifest["files"]), separators=(",", ":")
    )
    return hashlib.sha256(canon.encode()).hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".tmp-{p.name}-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return p


def write_manifest(directory: str | os.PathLike[str], manifest: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write ``manifest.json`` into ``directory`` last and atomically. Builds it if not given."""
    d = Path(directory)
    manifest = manifest if manifest is not None else build_manifest(d, **extra)
    return atomic_write_bytes(d / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True).encode())


def parse_manifest(data: bytes | str) -> dict[str, Any] | None:
    try:
        m = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(m, dict) or m.get("version") != MANIFEST_VERSION or not isinstance(m.get("files"), list):
        return None
    for f in m["files"]:
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int)
                and isinstance(f.get("sha256"), str)):
            return None
        if f["path"].startswith("/") or ".." in Path(f["path"]).parts:
            return None
    return m


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return parse_manifest((Path(directory) / MANIFEST_NAME).read_bytes())
    except OSError:
        return None


def verify_dir(directory: str | os.PathLike[str], manifest: dict[str, Any] | None = None, *,
               check_hashes: bool = True) -> list[str]:
    """Problems found (empty list = complete and intact)."""
    d = Path(directory)
    manifest = manifest if manifest is not None else read_manifest(d)
    if manifest is None:
        return [f"{d}: no valid {MANIFEST_NAME} (partial or not a checkpoint)"]
    problems = []
    for f in manifest["files"]:
        p = d / f["path"]
        try:
            size = p.stat().st_size
        except OSError:
            problems.append(f"{p}: missing")
            continue
        if size != f["size"]:
            problems.append(f"{p}: size {size} != {f['size']}")
        elif check_hashes and file_sha256(p) != f["sha256"]:
            problems.append(f"{p}: sha256 mismatch")
    return problems


def list_checkpoints(checkpoints_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    d = Path(checkpoints_dir)
    if not d.is_dir():
        return []
    out = [(s, p) for p in d.iterdir() if p.is_dir() and (s := checkpoint_step(p.name)) is not None]
    return sorted(out, reverse=True)


def latest_complete(checkpoints_dir: str | os.PathLike[str], *, check_hashes: bool = True) -> Path | None:
    """Newest ``step-NNNNNNNN`` directory whose manifest verifies; partial ones are skipped."""
    for _, path in list_checkpoints(checkpoints_dir):
        if not verify_dir(path, check_hashes=check_hashes):
            return path
    return None
