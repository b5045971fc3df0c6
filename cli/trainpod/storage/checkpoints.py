"""Checkpoints in a store: the latest complete one (manifest last, sha256 verified), fetching one, and the
background uploader the trainer uses."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainpod.errors import TrainpodError
from trainpod.manifest import (
    CHECKPOINT_RE,
    MANIFEST_NAME,
    atomic_write_bytes,
    file_sha256,
    parse_manifest,
    read_manifest,
)
from trainpod.storage.s3 import _IntegrityError
from trainpod.storage.stores import LocalStore, Store, open_store
from trainpod.storage.sync import _run_parallel
from trainpod.storage.uri import BEST_MARKER, DEFAULT_WORKERS, log

if TYPE_CHECKING:
    from trainpod.settings import Settings


# ======================================================================================= checkpoints
class CorruptCheckpointError(TrainpodError):
    """A checkpoint's bytes do not match its manifest (size or sha256)."""


def _checkpoint_dirs(listing: dict[str, int]) -> dict[str, dict[str, int]]:
    """Group a listing by ``step-NNNNNNNN`` directory: name -> {file rel path: size}."""
    out: dict[str, dict[str, int]] = {}
    for path, size in listing.items():
        head, _, rest = path.partition("/")
        if rest and CHECKPOINT_RE.match(head):
            out.setdefault(head, {})[rest] = size
    return out


def _complete(store: Store, name: str, files: dict[str, int]) -> dict[str, Any] | None:
    """The checkpoint's manifest if it is present and every file exists with its listed size."""
    if MANIFEST_NAME not in files:
        return None
    data = store.read_bytes(f"{name}/{MANIFEST_NAME}")
    manifest = parse_manifest(data) if data is not None else None
    if manifest is None:
        return None
    for f in manifest["files"]:
        if files.get(f["path"]) != f["size"]:
            log.info("checkpoint %s incomplete: %s missing or wrong size", store.uri_of(name), f["path"])
            return None
    return manifest


def latest_complete_checkpoint(uri: str, settings: Settings | None = None) -> str | None:
    """URI of the newest ``step-NNNNNNNN`` under ``uri`` whose manifest is present and whose files all
    exist with the listed sizes; partial and truncated checkpoints are skipped. The bytes (sha256) are checked
    by :func:`download_checkpoint`; :func:`fetch_latest_checkpoint` skips one whose content does not verify."""
    store = open_store(uri, settings)
    dirs = _checkpoint_dirs(store.list())
    for name in sorted(dirs, reverse=True):
        if _complete(store, name, dirs[name]) is not None:
            return store.uri_of(name)
    return None


def download_checkpoint(uri: str, local_dir: str | os.PathLike[str], settings: Settings | None = None, *,
                        workers: int = DEFAULT_WORKERS) -> Path:
    """Download one checkpoint directory, verifying every sha256; its manifest is written last."""
    store = open_store(uri, settings, workers=workers)
    data = store.read_bytes(MANIFEST_NAME)
    manifest = parse_manifest(data) if data is not None else None
    if manifest is None:
        raise TrainpodError(f"{store.uri}: no valid {MANIFEST_NAME}; the checkpoint is incomplete",
                            "use latest_complete_checkpoint() to pick a complete one")
    dest = Path(local_dir).expanduser()
    (dest / MANIFEST_NAME).unlink(missing_ok=True)  # until verified, the local copy is partial
    dest.mkdir(parents=True, exist_ok=True)

    def fetch(f: dict[str, Any]) -> None:
        p = dest / f["path"]
        with contextlib.suppress(OSError):
            if p.stat().st_size == f["size"] and file_sha256(p) == f["sha256"]:
                return
        store.download(f["path"], p, size=f["size"], sha256=f["sha256"])

    try:
        _run_parallel(fetch, sorted(manifest["files"], key=lambda f: -f["size"]), workers)
    except _IntegrityError as exc:
        raise CorruptCheckpointError(f"checkpoint {store.uri} is corrupt: {exc}",
                                     "pick an older one: fetch_latest_checkpoint() skips corrupt ones") from None
    atomic_write_bytes(dest / MANIFEST_NAME, data if data is not None else b"")
    return dest


def fetch_latest_checkpoint(uri: str, local_checkpoints: str | os.PathLike[str], settings: Settings | None = None,
                            *, workers: int = DEFAULT_WORKERS,
                            on_skip: Callable[[str], None] | None = None) -> Path | None:
    """Download the newest checkpoint under ``uri`` whose *content* verifies into ``local_checkpoints/NAME``.

    Sizes only say a checkpoint is whole; the bytes must also match its manifest's sha256. A checkpoint with
    a file of the right size but other bytes is not complete: it is skipped (its partial local copy removed,
    the reason passed to ``on_skip``, default: a warning logged) and the next older one is tried. None when
    no checkpoint verifies."""
    store = open_store(uri, settings, workers=workers)
    dirs = _checkpoint_dirs(store.list())
    for name in sorted(dirs, reverse=True):
        if _complete(store, name, dirs[name]) is None:
            continue
        dest = Path(local_checkpoints).expanduser() / name
        try:
            return download_checkpoint(store.uri_of(name), dest, settings, workers=workers)
        except CorruptCheckpointError as exc:
            (on_skip or log.warning)(f"{exc.message}; trying an older checkpoint")
            shutil.rmtree(dest, ignore_errors=True)
    return None


class CheckpointUploader:
    """Uploads local checkpoint directories in a background thread while training continues.

    Each ``submit`` is uploaded in order: the remote manifest is deleted first (a re-used step name
    is never complete while it changes), every file is uploaded in parallel, then the local
    ``manifest.json`` — the only mark of completeness. Retention keeps the last ``keep_last``
    complete checkpoints plus the best one, deleting each older one's manifest first. ``close``
    on SIGTERM finishes what is queued within the grace period.
    """

    def __init__(self, dest_uri: str, settings: Settings | None = None, *, keep_last: int = 3,
                 workers: int = DEFAULT_WORKERS):
        if keep_last < 1:
            raise TrainpodError(f"keep_last must be >= 1, got {keep_last}")
        self.store = open_store(dest_uri, settings, workers=workers)
        self.keep_last = keep_last
        self.workers = workers
        self.uploaded: list[str] = []
        self.errors: list[BaseException] = []
        self._reported = 0
        self._best: str | None = None
        self._queue: queue.Queue[tuple[Path, bool] | None] = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="trainpod-ckpt-upload", daemon=True)
        self._thread.start()

    def submit(self, local_ckpt_dir: str | os.PathLike[str], is_best: bool = False) -> None:
        path = Path(local_ckpt_dir)
        if self._closed:
            raise TrainpodError("CheckpointUploader is closed; cannot submit more checkpoints")
        if CHECKPOINT_RE.match(path.name) is None:
            raise TrainpodError(f"{path}: checkpoint directories are named step-NNNNNNNN")
        if read_manifest(path) is None:
            raise TrainpodError(f"{path}: no valid {MANIFEST_NAME}; write it (last) before submitting")
        with self._idle:
            self._pending += 1
        self._queue.put((path, is_best))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            path, is_best = item
            try:
                self._upload(path, is_best)
                self.uploaded.append(self.store.uri_of(path.name))
            except BaseException as exc:  # kept and re-raised from wait(): training must not die here
                log.error("checkpoint upload of %s failed: %s", path, exc)
                self.errors.append(exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _upload(self, path: Path, is_best: bool) -> None:
        name = path.name
        manifest = read_manifest(path)
        if manifest is None:
            raise TrainpodError(f"{path}: manifest vanished before upload")
        for f in manifest["files"]:
            actual = (path / f["path"]).stat().st_size
            if actual != f["size"]:
                raise TrainpodError(f"{path / f['path']}: {actual} bytes, manifest says {f['size']}")
        local_copy = isinstance(self.store, LocalStore) and (self.store.root / name).resolve() == path.resolve()
        if not local_copy:
            self.store.delete([f"{name}/{MANIFEST_NAME}"])
            _run_parallel(lambda f: self.store.upload(path / f["path"], f"{name}/{f['path']}", sha256=f["sha256"]),
                          sorted(manifest["files"], key=lambda f: -f["size"]), self.workers)
            self.store.upload(path / MANIFEST_NAME, f"{name}/{MANIFEST_NAME}")
        if is_best:
            self.store.write_bytes(BEST_MARKER, json.dumps({"name": name}).encode())
            self._best = name
        self._retain()

    def _best_name(self) -> str | None:
        if self._best is None:
            data = self.store.read_bytes(BEST_MARKER)
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                self._best = json.loads(data).get("name") if data else None
        return self._best

    def _retain(self) -> None:
        dirs = _checkpoint_dirs(self.store.list())
        complete = [n for n in sorted(dirs, reverse=True) if _complete(self.store, n, dirs[n]) is not None]
        if not complete:
            return
        keep = set(complete[: self.keep_last])
        best = self._best_name()
        if best:
            keep.add(best)
        newest_kept = complete[0]
        for name in sorted(dirs):
            if name in keep or name > newest_kept:  # never touch one newer than what we just finished
                continue
            files = dirs[name]
            if MANIFEST_NAME in files:  # manifest first: a half-deleted checkpoint is never "complete"
                self.store.delete([f"{name}/{MANIFEST_NAME}"])
            self.store.delete([f"{name}/{p}" for p in files if p != MANIFEST_NAME])

    def wait(self, timeout: float | None = None) -> bool:
        """Block until everything submitted is uploaded (True) or ``timeout`` passes (False).

        Raises the first upload failure not yet reported, as a TrainpodError.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._idle.wait(left)
            done = self._pending == 0
        if len(self.errors) > self._reported:
            exc = self.errors[self._reported]
            self._reported = len(self.errors)
            if isinstance(exc, TrainpodError):
                raise exc
            raise TrainpodError(f"checkpoint upload to {self.store.uri} failed: {type(exc).__name__}: {exc}")
        return done

    def close(self, timeout: float | None = None) -> bool:
        """Finish pending uploads within ``timeout`` seconds (the SIGTERM grace period) and stop."""
        self._closed = True
        try:
            return self.wait(timeout)
        finally:
            self._queue.put(None)
            if self._pending == 0:
                self._thread.join(timeout=5)
