"""One small interface over a local directory and an S3 prefix: list, read, write, download, delete."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from trainpod.errors import TrainpodError
from trainpod.manifest import (
    atomic_write_bytes,
    file_sha256,
)
from trainpod.storage.s3 import (
    MULTIPART_THRESHOLD,
    _IntegrityError,
    _is_not_found,
    _s3_errors,
    _settings,
    _transfer_config,
    _with_retries,
    s3_client,
)
from trainpod.storage.uri import DEFAULT_WORKERS, TMP_PREFIX, _tmp_name, is_s3, join_uri, parse_s3_uri

if TYPE_CHECKING:
    from trainpod.settings import Settings


# ======================================================================================= stores
class Store:
    """A root (directory or S3 prefix) addressed by relative posix paths."""

    uri: str

    def list(self, sub: str = "") -> dict[str, int]:
        """Every object under ``sub`` (recursive): relative path -> size."""
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes | None:
        """Whole object, or None if it does not exist."""
        raise NotImplementedError

    def write_bytes(self, rel: str, data: bytes) -> None:
        raise NotImplementedError

    def upload(self, local: Path, rel: str, *, sha256: str | None = None,
               on_bytes: Callable[[int], None] | None = None) -> str:
        """Upload one file; returns its sha256 (computed on the way when not given)."""
        raise NotImplementedError

    def download(self, rel: str, local: Path, *, size: int | None = None, sha256: str | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> str:
        """Fetch to a temp name, verify size/sha256, rename into place. Returns the sha256."""
        raise NotImplementedError

    def delete(self, rels: Iterable[str]) -> None:
        raise NotImplementedError

    def uri_of(self, rel: str) -> str:
        return join_uri(self.uri, rel)


class LocalStore(Store):
    """A directory: ``--remote local`` runs and tests need no bucket at all."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).expanduser()
        self.uri = str(self.root)

    def _p(self, rel: str) -> Path:
        rel = rel.strip("/")
        if rel and ".." in Path(rel).parts:
            raise TrainpodError(f"refusing path '{rel}' outside {self.root}")
        return self.root / rel if rel else self.root

    def list(self, sub: str = "") -> dict[str, int]:
        base = self._p(sub)
        if base.is_file():
            return {sub.strip("/"): base.stat().st_size}
        out: dict[str, int] = {}
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(TMP_PREFIX):
                    continue
                p = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    out[p.relative_to(self.root).as_posix()] = p.stat().st_size
        return out

    def exists(self, rel: str) -> bool:
        return self._p(rel).exists()

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            return self._p(rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        atomic_write_bytes(self._p(rel), data)

    def upload(self, local: Path, rel: str, *, sha256: str | None = None,
               on_bytes: Callable[[int], None] | None = None) -> str:
        dst = self._p(rel)
        if not (dst.exists() and os.path.samefile(local, dst)):
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = _tmp_name(dst)
            shutil.copyfile(local, tmp)
            os.replace(tmp, dst)
        if on_bytes:
            on_bytes(dst.stat().st_size)
        return sha256 or file_sha256(dst)

    def download(self, rel: str, local: Path, *, size: int | None = None, sha256: str | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> str:
        src = self._p(rel)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_name(local)
        try:
            shutil.copyfile(src, tmp)
            got = _verify_file(tmp, size, sha256, self.uri_of(rel))
            os.replace(tmp, local)
        finally:
            tmp.unlink(missing_ok=True)
        if on_bytes:
            on_bytes(local.stat().st_size)
        return got

    def delete(self, rels: Iterable[str]) -> None:
        parents = set()
        for rel in rels:
            p = self._p(rel)
            p.unlink(missing_ok=True)
            parents.add(p.parent)
        for parent in sorted(parents, key=lambda x: len(x.parts), reverse=True):
            with contextlib.suppress(OSError):  # remove directories left empty
                while parent != self.root and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent


class S3Store(Store):
    """An S3 prefix (any S3-compatible endpoint)."""

    def __init__(self, uri: str, settings: Settings | None = None, *, workers: int = DEFAULT_WORKERS):
        self.loc = parse_s3_uri(uri)
        self.uri = str(self.loc)
        self.settings = _settings(settings)
        self.client = s3_client(self.settings, workers=workers)

    @property
    def bucket(self) -> str:
        return self.loc.bucket

    def list(self, sub: str = "") -> dict[str, int]:
        key = self.loc.key(sub)
        out: dict[str, int] = {}
        strip = len(self.loc.prefix) + 1 if self.loc.prefix else 0
        with _s3_errors(self.bucket, "listing"):
            # Prefix=key (no slash) so a single object named by ``sub`` is listed too; siblings that
            # merely share the prefix ("DONE2" for "DONE") are filtered out.
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=key)
            for page in pages:
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    if k.startswith(f"{key}/") or not key or (k == key and sub.strip("/")):
                        out[k[strip:]] = int(obj["Size"])
        return out

    def exists(self, rel: str) -> bool:
        with _s3_errors(self.bucket, f"checking {self.uri_of(rel)}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self.loc.key(rel))
            except Exception as exc:
                if self._absent(self.loc.key(rel), exc):
                    return False
                raise
        return True

    def _absent(self, key: str, exc: BaseException) -> bool:
        """Is ``exc`` (from a HEAD/GET of ``key``) "no such object"? S3 answers 404 only to a caller that may list
        the bucket; to a run-scoped session (ListBucket limited by ``s3:prefix``, trainpod.credentials) it answers
        403 for a missing key, so a 403 is confirmed absent by listing that exact key, which the session may do."""
        if _is_not_found(exc):
            return True
        from botocore.exceptions import ClientError

        if not (isinstance(exc, ClientError) and exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 403):
            return False
        try:
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1)
        except Exception:
            return False  # not allowed to list it either: a real denial
        return not any(o.get("Key") == key for o in listed.get("Contents", []))

    def read_bytes(self, rel: str) -> bytes | None:
        def get() -> bytes | None:
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=self.loc.key(rel))
            except Exception as exc:
                if self._absent(self.loc.key(rel), exc):
                    return None
                raise
            return resp["Body"].read()

        with _s3_errors(self.bucket, f"reading {self.uri_of(rel)}"):
            return _with_retries(get, f"GET {self.uri_of(rel)}")

    def write_bytes(self, rel: str, data: bytes) -> None:
        with _s3_errors(self.bucket, f"writing {self.uri_of(rel)}"):
            _with_retries(lambda: self.client.put_object(Bucket=self.bucket, Key=self.loc.key(rel), Body=data),
                          f"PUT {self.uri_of(rel)}")

    def upload(self, local: Path, rel: str, *, sha256: str | None = None,
               on_bytes: Callable[[int], None] | None = None) -> str:
        key = self.loc.key(rel)
        size = local.stat().st_size

        def put() -> str:
            if size < MULTIPART_THRESHOLD:
                body = local.read_bytes()
                digest = sha256 or hashlib.sha256(body).hexdigest()
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, Metadata={"sha256": digest})
                if on_bytes:
                    on_bytes(size)
                return digest
            # large: hash in a side thread while the parts travel (hashlib releases the GIL)
            hashed: list[str] = [sha256] if sha256 else []
            hasher = None if sha256 else threading.Thread(target=lambda: hashed.append(file_sha256(local)))
            if hasher:
                hasher.start()
            try:
                self.client.upload_file(str(local), self.bucket, key, Config=_transfer_config(), Callback=on_bytes,
                                        ExtraArgs={"Metadata": {"sha256": sha256}} if sha256 else None)
            finally:
                if hasher:
                    hasher.join()
            return hashed[0]

        with _s3_errors(self.bucket, f"uploading {local} to {self.uri_of(rel)}"):
            return str(_with_retries(put, f"upload {self.uri_of(rel)}"))

    def download(self, rel: str, local: Path, *, size: int | None = None, sha256: str | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> str:
        key = self.loc.key(rel)
        local.parent.mkdir(parents=True, exist_ok=True)
        where = self.uri_of(rel)

        def get() -> str:
            tmp = _tmp_name(local)
            try:
                if size is not None and size < MULTIPART_THRESHOLD:
                    body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
                    got = _verify_bytes(body, size, sha256, where)
                    with open(tmp, "wb") as fh:
                        fh.write(body)
                else:
                    self.client.download_file(self.bucket, key, str(tmp), Config=_transfer_config())
                    got = _verify_file(tmp, size, sha256, where)
                os.replace(tmp, local)
                return got
            finally:
                tmp.unlink(missing_ok=True)

        with _s3_errors(self.bucket, f"downloading {where}"):
            got = _with_retries(get, f"download {where}")
        if on_bytes:
            on_bytes(local.stat().st_size)
        return got

    def delete(self, rels: Iterable[str]) -> None:
        keys = [self.loc.key(r) for r in rels]
        with _s3_errors(self.bucket, "deleting from"):
            for i in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[i:i + 1000]]
                resp = _with_retries(lambda b=batch: self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": b, "Quiet": True}), f"DELETE in {self.uri}")
                errors = resp.get("Errors") or []
                if errors:
                    first = errors[0]
                    raise TrainpodError(
                        f"deleting from {self.uri}: {len(errors)} objects failed, e.g. {first.get('Key')}: "
                        f"{first.get('Code')}", "check s3:DeleteObject permission for AWS_ACCESS_KEY_ID")


def _verify_bytes(body: bytes, size: int | None, sha256: str | None, where: str) -> str:
    if size is not None and len(body) != size:
        raise _IntegrityError(f"{where}: got {len(body)} bytes, manifest says {size}")
    got = hashlib.sha256(body).hexdigest()
    if sha256 is not None and got != sha256:
        raise _IntegrityError(f"{where}: sha256 mismatch")
    return got


def _verify_file(path: Path, size: int | None, sha256: str | None, where: str) -> str:
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise _IntegrityError(f"{where}: got {actual} bytes, manifest says {size}")
    got = file_sha256(path)
    if sha256 is not None and got != sha256:
        raise _IntegrityError(f"{where}: sha256 mismatch")
    return got


def open_store(uri: str | os.PathLike[str], settings: Settings | None = None, *,
               workers: int = DEFAULT_WORKERS) -> Store:
    """The store for a local path or an ``s3://`` URI."""
    uri = str(uri)
    if is_s3(uri):
        return S3Store(uri, settings, workers=workers)
    if "://" in uri:
        raise TrainpodError(f"unsupported storage URI '{uri}'", "use a local path or s3://BUCKET/PREFIX")
    return LocalStore(uri)
