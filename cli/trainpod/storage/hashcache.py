"""What a sync knows: entries and results, progress, and the hash cache keyed on a file's stat."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainpod.manifest import (
    atomic_write_bytes,
    file_sha256,
)

if TYPE_CHECKING:
    pass


# ======================================================================================= results
@dataclass
class SyncResult:
    """What a sync moved (or, with ``dry_run``, would move)."""

    source: str
    dest: str
    dry_run: bool = False
    transferred: list[tuple[str, int]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0
    bytes: int = 0
    seconds: float = 0.0
    manifest_sha256: str | None = None
    verified_by: str = "sha256"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["transferred"] = [{"path": p, "size": s} for p, s in self.transferred]
        return d


@dataclass(frozen=True)
class Entry:
    path: str
    size: int
    sha256: str | None = None


# ======================================================================================= progress
class _Progress:
    """Bytes + files progress (rich), shown only when asked for; thread-safe."""

    def __init__(self, enabled: bool, label: str, total_bytes: int, total_files: int):
        self._bar = None
        self._lock = threading.Lock()
        self._files = 0
        self._total_files = total_files
        if not enabled or total_files == 0:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TextColumn("{task.fields[files]}"), TimeRemainingColumn(), transient=False,
            console=Console(stderr=True),  # stdout stays clean for --json and pipes
        )
        self._task = self._bar.add_task(label, total=total_bytes, files=f"0/{total_files} files")
        self._bar.start()

    def bytes(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def file_done(self) -> None:
        if self._bar is not None:
            with self._lock:
                self._files += 1
                files = f"{self._files}/{self._total_files} files"
            self._bar.update(self._task, files=files)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# ======================================================================================= hash cache
class HashCache:
    """sha256 of local files keyed by (path, size, mtime_ns, ctime_ns, inode): a speed-up, never a source of truth.

    Why ctime: size and mtime alone would let a same-size rewrite whose mtime was put back (``touch -r``,
    ``os.utime``, ``cp -p``, ``rsync -t``) keep its old hash, and the changed file would never be pushed. The
    inode change time cannot be set by a user and moves on every write and every utime.

    Stored as JSON under ``state_dir/storage/hashes.json`` and written atomically; concurrent
    processes may lose each other's entries, which only costs a re-hash.
    """

    def __init__(self, state_dir: str | os.PathLike[str] | None):
        self._path = Path(state_dir).expanduser() / "storage" / "hashes.json" if state_dir else None
        self._lock = threading.Lock()
        self._dirty = False
        self._data: dict[str, list[Any]] = {}
        if self._path is not None:
            with contextlib.suppress(OSError, ValueError):
                loaded = json.loads(self._path.read_bytes())
                if isinstance(loaded, dict):
                    self._data = loaded

    @staticmethod
    def _key(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def lookup(self, name: str, st: os.stat_result) -> str | None:
        """Cached sha256 for an absolute, resolved path with this stat, else None."""
        hit = self._data.get(name)
        return str(hit[-1]) if isinstance(hit, list) and hit[:-1] == self._key(st) else None

    def store(self, name: str, st: os.stat_result, digest: str) -> None:
        with self._lock:
            self._data[name] = [*self._key(st), digest]
            self._dirty = True

    def sha256(self, path: Path) -> str:
        name, st = str(path.resolve()), path.stat()
        digest = self.lookup(name, st)
        if digest is None:
            digest = file_sha256(path)
            self.store(name, st, digest)
        return digest

    def remember(self, path: Path, digest: str) -> None:
        self.store(str(path.resolve()), path.stat(), digest)

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        with self._lock:
            data = json.dumps(self._data, separators=(",", ":")).encode()
            self._dirty = False
        with contextlib.suppress(OSError):
            atomic_write_bytes(self._path, data)
