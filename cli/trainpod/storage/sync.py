"""Directory <-> prefix sync with a manifest written last; dataset manifests and the digest a run is pinned to."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainpod.errors import TrainpodError
from trainpod.manifest import (
    MANIFEST_VERSION,
    atomic_write_bytes,
    file_sha256,
    manifest_digest,
    parse_manifest,
)
from trainpod.storage.hashcache import Entry, HashCache, SyncResult, _Progress
from trainpod.storage.s3 import _IntegrityError, _settings
from trainpod.storage.stores import LocalStore, Store, open_store
from trainpod.storage.uri import DEFAULT_WORKERS, META_DIR, PREFIX_MANIFEST, PUSH_MARKER, TMP_PREFIX, is_s3

if TYPE_CHECKING:
    from trainpod.settings import Settings


# ======================================================================================= sync
def _scan_local(root: Path, cache: HashCache, workers: int,
                hash_now: Callable[[str, int], bool] | None = None,
                exclude: tuple[str, ...] = ()) -> dict[str, Entry]:
    """Every file under ``root`` (except ``.trainpod/``, temp files and ``exclude`` prefixes) with
    its size and sha256.

    Cache hits cost one stat. A miss is hashed here only if ``hash_now(rel, size)`` says so (default:
    always); otherwise its ``sha256`` stays None and whoever uploads it hashes it on the way.
    """
    base = root.resolve()
    found: list[tuple[str, os.stat_result]] = []
    for dirpath, dirs, files in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        dirs[:] = sorted(d for d in dirs if not (not rel_dir and d == META_DIR))
        for name in sorted(files):
            if not name.startswith(TMP_PREFIX) and not (rel_dir + name).startswith(exclude):
                with contextlib.suppress(FileNotFoundError):
                    found.append((rel_dir + name, os.stat(os.path.join(dirpath, name))))
    out: dict[str, Entry] = {}
    misses: list[tuple[str, os.stat_result]] = []
    for rel, st in found:
        digest = cache.lookup(str(base / rel), st)
        if digest is None and (hash_now is None or hash_now(rel, st.st_size)):
            misses.append((rel, st))
        out[rel] = Entry(rel, st.st_size, digest)

    def hash_one(item: tuple[str, os.stat_result]) -> Entry:
        rel, st = item
        digest = file_sha256(base / rel)
        cache.store(str(base / rel), st, digest)
        return Entry(rel, st.st_size, digest)

    if misses:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, 8, len(misses)))) as pool:
            for e in pool.map(hash_one, misses):
                out[e.path] = e
    return out


def _manifest_of(entries: Iterable[Entry], **extra: Any) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": [{"path": e.path, "size": e.size, "sha256": e.sha256}
                  for e in sorted(entries, key=lambda e: e.path)],
        **extra,
    }


def _encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def read_prefix_manifest(store: Store) -> dict[str, Any] | None:
    data = store.read_bytes(PREFIX_MANIFEST)
    return parse_manifest(data) if data is not None else None


def _run_parallel(fn: Callable[[Any], Any], items: list[Any], workers: int) -> None:
    """Run ``fn`` over ``items`` on a bounded pool; the first failure cancels the rest and is raised."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        futures = [pool.submit(fn, it) for it in items]
        try:
            for fut in futures:
                fut.result()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def sync_up(local_dir: str | os.PathLike[str], uri: str, settings: Settings | None = None, *,
            delete: bool = False, dry_run: bool = False, verify: bool = False, progress: bool = False,
            workers: int = DEFAULT_WORKERS, exclude: Iterable[str] = (), last: Iterable[str] = ()) -> SyncResult:
    """Push a directory to a prefix: upload what differs by (size, sha256), then the manifest last.

    The decision uses the remote manifest only (one GET). ``verify`` (and ``delete``) add one LIST,
    so objects removed or truncated behind trainpod's back are re-uploaded / extra ones found.
    Without ``delete`` remote files that are not local stay, and stay in the manifest.
    ``exclude``: relative path prefixes to leave out (e.g. ``checkpoints/``, shipped separately).
    ``last``: relative paths uploaded after everything else, even the manifest (a run's ``DONE``).
    """
    last = tuple(last)
    t0 = time.perf_counter()
    root = Path(local_dir).expanduser()
    if not root.is_dir():
        raise TrainpodError(f"{root}: not a directory", "data push takes a directory; put single files in one")
    s = _settings(settings)
    store = open_store(uri, s, workers=workers)
    cache = HashCache(s.state_dir)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the LIST overlaps the manifest GET and the scan
        listing_f = pool.submit(store.list) if (verify or delete) else None
        remote_manifest = read_prefix_manifest(store)
        known = {f["path"]: f for f in (remote_manifest or {"files": []})["files"]}
        # only a file whose size matches the manifest can be unchanged: hash those now; hash the
        # rest while uploading them (or now, on a dry run, which reports the manifest digest)
        local = _scan_local(root, cache, workers,
                            None if dry_run else (lambda rel, size: rel in last or ((k := known.get(rel)) is not None
                                                                                    and k["size"] == size)),
                            exclude=tuple(exclude))
        listing = listing_f.result() if listing_f else None
    todo = [e for e in local.values()
            if not ((k := known.get(e.path)) and k["size"] == e.size and k["sha256"] == e.sha256
                    and (listing is None or listing.get(e.path) == e.size))]
    remote_only = sorted(p for p in (listing if listing is not None else known)
                         if p not in local and not p.startswith((f"{META_DIR}/", *exclude)))
    to_delete = remote_only if delete else []
    result = SyncResult(source=str(root), dest=store.uri, dry_run=dry_run,
                        transferred=[(e.path, e.size) for e in todo], deleted=to_delete,
                        unchanged=len(local) - len(todo), bytes=sum(e.size for e in todo))
    # remote-only files kept (no --delete) stay described, with the hash the old manifest knew
    kept = [] if delete else [Entry(p, known[p]["size"], known[p]["sha256"]) for p in remote_only
                              if p in known and (listing is None or listing.get(p) == known[p]["size"])]
    changed = bool(todo or to_delete or remote_manifest is None
                   or {f["path"] for f in remote_manifest["files"]} != set(local) | {e.path for e in kept})
    if dry_run or not changed:
        cache.save()
        result.manifest_sha256 = manifest_digest(_manifest_of([*local.values(), *kept]))
        result.seconds = time.perf_counter() - t0
        return result
    # the prefix is about to change: mark it as being pushed, then drop the old manifest, so a pull in
    # between (or after a killed push) refuses instead of taking a mix of old and new files
    store.write_bytes(PUSH_MARKER, json.dumps({"started": datetime.now(timezone.utc).isoformat()}).encode())
    if remote_manifest is not None:
        store.delete([PREFIX_MANIFEST])
    bar = _Progress(progress, "push", result.bytes, len(todo))
    root_r = root.resolve()
    try:
        def up(e: Entry) -> None:
            p = root_r / e.path
            st = p.stat()
            digest = store.upload(p, e.path, sha256=e.sha256, on_bytes=bar.bytes)
            if e.sha256 is None:
                cache.store(str(p), st, digest)
                local[e.path] = Entry(e.path, e.size, digest)
            bar.file_done()

        _run_parallel(up, sorted((e for e in todo if e.path not in last), key=lambda e: -e.size), workers)
        if to_delete:
            store.delete(to_delete)
        manifest = _manifest_of([*local.values(), *kept])
        store.write_bytes(PREFIX_MANIFEST, _encode(manifest))
        store.delete([PUSH_MARKER])
        for e in todo:
            if e.path in last:
                up(e)
    finally:
        bar.close()
        cache.save()
    result.manifest_sha256 = manifest_digest(manifest)
    result.seconds = time.perf_counter() - t0
    return result


def sync_down(uri: str, local_dir: str | os.PathLike[str], settings: Settings | None = None, *,
              delete: bool = False, dry_run: bool = False, progress: bool = False,
              workers: int = DEFAULT_WORKERS) -> SyncResult:
    """Pull a prefix into a directory: download what differs, verified against the manifest.

    A prefix without a manifest (uploaded by another tool) is pulled by listing and checked by size
    only; ``verified_by`` in the result says so. The manifest is copied to ``LOCAL/.trainpod/`` last.
    """
    t0 = time.perf_counter()
    root = Path(local_dir).expanduser()
    s = _settings(settings)
    store = open_store(uri, s, workers=workers)
    manifest = read_prefix_manifest(store)
    if manifest is not None:
        wanted = {f["path"]: Entry(f["path"], f["size"], f["sha256"]) for f in manifest["files"]}
        verified_by = "sha256"
    else:
        listing = store.list()
        if PUSH_MARKER in listing:
            raise TrainpodError(f"{store.uri}: a push to this prefix is in progress or was interrupted (no manifest)",
                                f"wait for it, or re-run `trainpod data push LOCAL_DIR {store.uri}`")
        if not listing:
            raise TrainpodError(f"{store.uri}: nothing there (no objects, no manifest)",
                                f"push it first: trainpod data push LOCAL_DIR {store.uri}")
        wanted = {p: Entry(p, n) for p, n in listing.items() if not p.startswith(f"{META_DIR}/")}
        verified_by = "size"
    cache = HashCache(s.state_dir)

    def current(e: Entry) -> bool:
        p = root / e.path
        try:
            if p.stat().st_size != e.size:
                return False
        except OSError:
            return False
        return e.sha256 is None or cache.sha256(p) == e.sha256

    with ThreadPoolExecutor(max_workers=16) as pool:
        fresh = list(pool.map(current, wanted.values()))
    todo = [e for e, ok in zip(wanted.values(), fresh, strict=True) if not ok]
    to_delete: list[str] = []
    if delete and root.is_dir():
        local_files = LocalStore(root).list()
        to_delete = sorted(p for p in local_files if p not in wanted and not p.startswith(f"{META_DIR}/"))
    result = SyncResult(source=store.uri, dest=str(root), dry_run=dry_run,
                        transferred=[(e.path, e.size) for e in todo], deleted=to_delete,
                        unchanged=len(wanted) - len(todo), bytes=sum(e.size for e in todo),
                        manifest_sha256=manifest_digest(manifest) if manifest else None, verified_by=verified_by)
    if dry_run:
        cache.save()
        result.seconds = time.perf_counter() - t0
        return result
    root.mkdir(parents=True, exist_ok=True)
    local_store = LocalStore(root)
    marker = root / PREFIX_MANIFEST
    if todo or to_delete:
        marker.unlink(missing_ok=True)
    bar = _Progress(progress, "pull", result.bytes, len(todo))
    try:
        def down(e: Entry) -> None:
            got = store.download(e.path, root / e.path, size=e.size, sha256=e.sha256, on_bytes=bar.bytes)
            cache.remember(root / e.path, got)
            bar.file_done()

        try:
            _run_parallel(down, sorted(todo, key=lambda e: -e.size), workers)
        except _IntegrityError as exc:
            raise TrainpodError(f"pull {store.uri}: {exc}", "the object changed or is corrupt; push it again") from None
        if to_delete:
            local_store.delete(to_delete)
        if manifest is not None:
            atomic_write_bytes(marker, _encode(manifest))
    finally:
        bar.close()
        cache.save()
    result.seconds = time.perf_counter() - t0
    return result


def list_uri(uri: str, settings: Settings | None = None) -> dict[str, Any]:
    """What a prefix holds: files (with sha256 where a manifest has it) and the manifest digest."""
    store = open_store(uri, settings)
    listing = store.list()
    manifest = read_prefix_manifest(store)
    hashes = {f["path"]: f["sha256"] for f in manifest["files"]} if manifest else {}
    files = [Entry(p, n, hashes.get(p)) for p, n in sorted(listing.items())
             if not p.startswith(f"{META_DIR}/")]
    return {
        "uri": store.uri,
        "files": [asdict(e) for e in files],
        "total_bytes": sum(e.size for e in files),
        "manifest_sha256": manifest_digest(manifest) if manifest else None,
    }


def dataset_manifest(uri: str, settings: Settings | None = None) -> dict[str, Any]:
    """What a dataset holds: its manifest (files with size and sha256).

    A pushed prefix has a manifest; a local directory or file is hashed on the spot (through the hash cache).
    A local directory's copied ``.trainpod/manifest.json`` (from ``data pull``) is not trusted: the files
    may have been edited since, and the pin must describe the bytes a run reads.
    """
    if not is_s3(uri):
        p = Path(uri).expanduser()
        if p.is_file():
            return _manifest_of([Entry(p.name, p.stat().st_size, file_sha256(p))])
        if not p.is_dir():
            raise TrainpodError(f"dataset '{uri}' not found", "give a directory, a file, or s3://BUCKET/PREFIX")
        cache = HashCache(_settings(settings).state_dir)
        entries = _scan_local(p, cache, DEFAULT_WORKERS).values()
        cache.save()
        return _manifest_of(entries)
    manifest = read_prefix_manifest(open_store(uri, settings))
    if manifest is None:
        raise TrainpodError(f"{uri}: no dataset manifest ({PREFIX_MANIFEST})",
                            f"push the dataset with `trainpod data push DIR {uri}` so it is pinned")
    return manifest


def dataset_manifest_digest(uri: str, settings: Settings | None = None) -> str:
    """The content digest of a dataset (what the RunSpec records as ``dataset_manifest_sha256``)."""
    return manifest_digest(dataset_manifest(uri, settings))


def manifest_changes(pinned: dict[str, str], manifest: dict[str, Any]) -> list[str]:
    """``path (modified|added|removed)`` for every file that differs between ``pinned`` ({path: sha256})
    and ``manifest``; empty when they hold the same files with the same bytes."""
    now = {f["path"]: f["sha256"] for f in manifest["files"]}
    out = [f"{p} (modified)" for p in sorted(pinned) if p in now and now[p] != pinned[p]]
    out += [f"{p} (added)" for p in sorted(now) if p not in pinned]
    out += [f"{p} (removed)" for p in sorted(pinned) if p not in now]
    return out
