"""Storage: local directories and ``s3://bucket/prefix`` behind one small interface.

Why this module exists: every run that leaves the user's machine reads its dataset from, and writes
its checkpoints and outputs to, object storage, so the run outlives the pod. ``--remote local`` uses
the very same code with a plain directory, so no bucket is needed to develop or test.

Design decisions (see issue 5):

* **Sync by content, not mtime.** What a prefix holds is recorded in a manifest (path, size, sha256)
  at ``<prefix>/.trainpod/manifest.json``, written last. A push compares local (size, sha256) with
  the remote manifest alone — one GET, no LIST, since trainpod deletes the manifest before changing a
  prefix and writes it after — so a fresh checkout that touched every mtime re-uploads nothing and a
  no-op push sends zero PUTs (``verify=True`` adds a LIST to repair objects removed behind trainpod's
  back). A file whose size differs from the manifest is uploaded at once and hashed while it
  travels; only same-size files are hashed before deciding. Local hashes are cached by
  (path, size, mtime_ns, ctime_ns, inode) under ``settings.state_dir``; the cache only saves time — a miss
  just re-hashes, so correctness never depends on mtime.
* **Completeness marks.** Before anything changes under a prefix, its manifest is deleted; the new
  one is written after the last object. A checkpoint ``step-NNNNNNNN/`` is complete only when its
  ``manifest.json`` exists and every listed file is present with the listed size (and hash, when
  downloaded). Downloads go to temp names, are verified, then renamed; the manifest is renamed last.
* **Throughput.** Many small files go through a bounded thread pool with ``put_object``/
  ``get_object`` (no per-file transfer-manager overhead); large files use multipart transfers with a
  tuned ``TransferConfig``. The HTTP pool is sized to the workers so threads never wait on sockets.
* **Resilience.** botocore retries (standard mode, 8 attempts; ``AWS_MAX_ATTEMPTS`` /
  ``AWS_RETRY_MODE`` override) cover 5xx, throttling and connection resets on each request; a
  per-file retry on top covers a body that breaks mid-stream. Auth / bucket / permission / endpoint
  problems become a :class:`~trainpod.errors.TrainpodError` naming the bucket and the setting to fix.

boto3 is imported lazily (inside functions): ``trainpod --help`` must not pay for it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from trainpod.errors import TrainpodError
from trainpod.manifest import (
    CHECKPOINT_RE,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    atomic_write_bytes,
    file_sha256,
    manifest_digest,
    parse_manifest,
    read_manifest,
)

if TYPE_CHECKING:
    from trainpod.settings import Settings

log = logging.getLogger(__name__)

META_DIR = ".trainpod"
PREFIX_MANIFEST = f"{META_DIR}/{MANIFEST_NAME}"  # manifest of a synced prefix (datasets, outputs)
BEST_MARKER = f"{META_DIR}/best.json"  # which checkpoint is the best one (kept by retention)
PUSH_MARKER = f"{META_DIR}/pushing"  # present while a push changes a prefix (no manifest then)
TMP_PREFIX = ".tmp-"

# Small objects are latency bound: against real S3 (20-50 ms per PUT) 64 in flight keep the pipe
# full, while on the loopback benchmark (benchmarks/s3_sync.py, server-bound) 8..64 workers measured
# the same. Large objects go in 16 MiB parts, 16 at a time: on loopback as fast as boto3's 8 MiB x 10
# default with half the requests, and more parts in flight for long-latency links.
DEFAULT_WORKERS = 64
MULTIPART_THRESHOLD = 32 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
MULTIPART_CONCURRENCY = 16
FILE_ATTEMPTS = 4  # per-file retries on top of botocore's per-request retries


# ======================================================================================= URIs
@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # no leading/trailing slash; "" = bucket root

    def key(self, rel: str) -> str:
        rel = rel.strip("/")
        if not self.prefix:
            return rel
        return f"{self.prefix}/{rel}" if rel else self.prefix

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def parse_s3_uri(uri: str) -> S3Location:
    rest = uri[len("s3://"):]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise TrainpodError(f"invalid S3 URI '{uri}': no bucket", "write it as s3://BUCKET/PREFIX")
    return S3Location(bucket, prefix.strip("/"))


def join_uri(uri: str, rel: str) -> str:
    return f"{str(uri).rstrip('/')}/{rel.strip('/')}" if rel else str(uri)


def _split_parent(uri: str) -> tuple[str, str]:
    """``s3://b/p/x`` -> (``s3://b/p``, ``x``); a bucket root has no parent."""
    uri = str(uri).rstrip("/")
    if is_s3(uri):
        loc = parse_s3_uri(uri)
        if not loc.prefix:
            raise TrainpodError(f"'{uri}' names a bucket, not an object", "add a key: s3://BUCKET/KEY")
        parent, _, name = loc.prefix.rpartition("/")
        return str(S3Location(loc.bucket, parent)), name
    p = Path(uri)
    return str(p.parent), p.name


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


# ======================================================================================= S3 client
_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from trainpod.settings import load_settings

    return load_settings()


def _retry_config() -> dict[str, Any]:
    mode = os.environ.get("AWS_RETRY_MODE") or "standard"
    try:
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 8)
    except ValueError:
        raise TrainpodError("AWS_MAX_ATTEMPTS must be an integer", "e.g. AWS_MAX_ATTEMPTS=8") from None
    return {"mode": mode, "max_attempts": max(1, attempts)}


def s3_client(settings: Settings | None = None, *, workers: int = DEFAULT_WORKERS, quick: bool = False) -> Any:
    """A boto3 S3 client from settings (endpoint, region, keys) or the standard credential chain.

    Clients are thread-safe and expensive to build (~50 ms), so one is cached per configuration.
    ``quick``: short timeouts and no retries, for :func:`preflight` only; transfers keep their retries.
    """
    s = _settings(settings)
    key_id = s.aws_access_key_id
    secret = s.aws_secret_access_key.get_secret_value() if s.aws_secret_access_key else None
    token = s.aws_session_token.get_secret_value() if s.aws_session_token else None
    retries = {"mode": "standard", "max_attempts": 1} if quick else _retry_config()
    cache_key = (s.s3_endpoint_url, s.aws_region, key_id, hashlib.sha256(f"{secret}|{token}".encode()).hexdigest(),
                 workers, tuple(sorted(retries.items())), quick)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is not None:
            return client
        from trainpod import deps

        deps.require("s3")
        import boto3
        from botocore.config import Config

        config = Config(
            retries=retries,  # type: ignore[arg-type]
            max_pool_connections=workers + MULTIPART_CONCURRENCY,
            connect_timeout=PREFLIGHT_TIMEOUT_S if quick else 10,
            read_timeout=PREFLIGHT_TIMEOUT_S if quick else 120,
            tcp_keepalive=True,
            parameter_validation=False,  # we build every request ourselves; saves client CPU per object
            # Request checksums stay botocore's default (CRC per request, checked by S3); an
            # S3-compatible store that rejects them takes botocore's own
            # AWS_REQUEST_CHECKSUM_CALCULATION=when_required. End-to-end integrity does not depend
            # on it: every download is checked against the manifest's sha256.
            # S3-compatible endpoints (MinIO, R2, RunPod volumes, moto) want path-style addressing
            s3={"addressing_style": "path"} if s.s3_endpoint_url else {},
        )
        session = boto3.session.Session(
            aws_access_key_id=key_id if secret else None,
            aws_secret_access_key=secret if key_id else None,
            aws_session_token=token if (key_id and secret) else None,
            region_name=s.aws_region or ("us-east-1" if s.s3_endpoint_url else None),
        )
        client = session.client("s3", endpoint_url=s.s3_endpoint_url or None, config=config)
        _clients[cache_key] = client
        return client


PREFLIGHT_TIMEOUT_S = 5


def preflight(uris: Iterable[str | None], settings: Settings | None = None) -> None:
    """One quick request per bucket a run will use (ListObjectsV2 of its prefix, the permission sync needs),
    so a wrong endpoint, rejected credentials or a missing bucket fail in seconds with one clear line, before
    images are built or pods rented. Short timeouts and no retries apply to this check only."""
    seen: set[str] = set()
    for uri in uris:
        if not uri or not is_s3(uri):
            continue
        loc = parse_s3_uri(uri)
        if loc.bucket in seen:
            continue
        seen.add(loc.bucket)
        client = s3_client(settings, workers=1, quick=True)
        with _s3_errors(loc.bucket, f"checking access to {loc}"):
            client.list_objects_v2(Bucket=loc.bucket, Prefix=loc.prefix, MaxKeys=1)


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=MULTIPART_THRESHOLD,
        multipart_chunksize=MULTIPART_CHUNKSIZE,
        max_concurrency=MULTIPART_CONCURRENCY,
        use_threads=True,
    )


class S3CredentialsError(TrainpodError):
    """S3 refused the credentials (expired, revoked, or outside their scope): retrying cannot help."""


_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
               "AuthorizationHeaderMalformed", "InvalidClientTokenId", "TokenRefreshRequired"}


def _translate(exc: BaseException, bucket: str, action: str) -> TrainpodError | None:
    """Map a botocore failure to a user-facing error naming the bucket and the setting to fix."""
    from botocore import exceptions as bex

    where = "" if "s3://" in action else f" s3://{bucket}"  # an action naming its URI needs no repeat
    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return TrainpodError(
            f"{action}{where}: no AWS credentials found",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment",
        )
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError):
        url = urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url") or ""))
        endpoint = f"{url.scheme}://{url.netloc}" if url.netloc else "(AWS)"  # not the request's path and query
        return TrainpodError(
            f"{action}{where}: cannot reach the S3 endpoint {endpoint} ({type(exc).__name__})",
            "check TRAINPOD_S3_ENDPOINT_URL / AWS_ENDPOINT_URL (unset it for AWS) and your network",
        )
    if isinstance(exc, bex.ReadTimeoutError):
        url = urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url") or ""))
        return TrainpodError(
            f"{action}{where}: the S3 endpoint {url.scheme}://{url.netloc} did not answer (ReadTimeoutError)",
            "check TRAINPOD_S3_ENDPOINT_URL / AWS_ENDPOINT_URL (unset it for AWS) and your network",
        )
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return TrainpodError(
                f"{action}{where}: bucket '{bucket}' does not exist at this endpoint",
                "create it, fix the URI, or check TRAINPOD_S3_ENDPOINT_URL / AWS_ENDPOINT_URL and AWS_REGION",
            )
        if code in _AUTH_CODES:
            return S3CredentialsError(
                f"{action}{where}: credentials rejected ({code})",
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN and that "
                "AWS_ENDPOINT_URL points at the service that issued them",
            )
        if code in {"AccessDenied", "AllAccessDisabled", "403"} or status == 403:
            return S3CredentialsError(
                f"{action}{where}: access denied",
                f"the credentials in AWS_ACCESS_KEY_ID need s3:ListBucket/GetObject/PutObject/DeleteObject on '{bucket}'",
            )
        if code in {"PermanentRedirect", "301", "AuthorizationHeaderMalformedRegion"}:
            return TrainpodError(
                f"{action}{where}: bucket is in another region", "set AWS_REGION to the bucket's region",
            )
        return TrainpodError(f"{action}{where}: S3 error {code or status}: {err.get('Message', '')}".rstrip(": "))
    if isinstance(exc, bex.BotoCoreError):
        return TrainpodError(f"{action}{where}: {type(exc).__name__}: {exc}")
    return None


@contextlib.contextmanager
def _s3_errors(bucket: str, action: str) -> Iterator[None]:
    try:
        yield
    except TrainpodError:
        raise
    except Exception as exc:
        translated = _translate(exc, bucket, action)
        if translated is None:
            raise
        raise translated from None


def _is_not_found(exc: BaseException) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code == "NoSuchBucket":
        return False
    return code in {"404", "NoSuchKey", "NotFound"}


def _transient(exc: BaseException) -> bool:
    """Errors worth another whole-file attempt after botocore gave up or the body broke mid-stream."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return int(status) >= 500 or exc.response.get("Error", {}).get("Code") in {"SlowDown", "RequestTimeout"}
    return isinstance(exc, bex.ConnectionError | bex.HTTPClientError | bex.ResponseStreamingError
                      | bex.IncompleteReadError | ConnectionError | TimeoutError | _IntegrityError)


class _IntegrityError(Exception):
    """Downloaded bytes did not match the manifest (size or sha256)."""


def _with_retries(fn: Callable[[], Any], what: str) -> Any:
    for attempt in range(1, FILE_ATTEMPTS + 1):
        try:
            return fn()
        except Exception as exc:
            # a hash mismatch is retried once (a body cut short mid-read); twice means the object is bad
            limit = 2 if isinstance(exc, _IntegrityError) else FILE_ATTEMPTS
            if attempt >= limit or not _transient(exc):
                raise
            log.warning("%s failed (%s); retrying (%d/%d)", what, type(exc).__name__, attempt, limit - 1)
            time.sleep(min(0.1 * 2 ** attempt, 5.0))
    raise AssertionError("unreachable")


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{threading.get_ident()}")


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


# ======================================================================================= single objects
def exists(uri: str, settings: Settings | None = None) -> bool:
    parent, name = _split_parent(uri)
    return open_store(parent, settings).exists(name)


def read_bytes(uri: str, settings: Settings | None = None) -> bytes | None:
    """Whole object (markers, status, logs), or None when it does not exist."""
    parent, name = _split_parent(uri)
    return open_store(parent, settings).read_bytes(name)


def write_bytes(uri: str, data: bytes, settings: Settings | None = None) -> None:
    """Write one object atomically (S3 PUTs are atomic; local files use temp + rename)."""
    parent, name = _split_parent(uri)
    open_store(parent, settings).write_bytes(name, data)


def ship_changed(store: Store, root: Path, rels: Iterable[str], sent: dict[str, tuple[int, ...]],
                 on_error: Callable[[str, Exception], None] | None = None) -> None:
    """Upload each of ``rels`` (relative to ``root``) whose size, mtime or ctime changed since ``sent`` last
    recorded it (ctime: a rewrite that put the mtime back is still a change).

    For the few small files a live view reads (logs, status.json), every few seconds: mtime is a change hint for
    these only, never a sync decision. Missing files are skipped; ``on_error`` gets a file's upload error and the
    others are still tried (without it the error is raised)."""
    for rel in rels:
        path = root / rel
        try:
            st = path.stat()
            seen = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if sent.get(rel) == seen:
                continue
            store.write_bytes(rel, path.read_bytes())
            sent[rel] = seen
        except FileNotFoundError:
            continue
        except (OSError, TrainpodError) as exc:
            if on_error is None:
                raise
            on_error(rel, exc)


def delete(uri: str, settings: Settings | None = None) -> None:
    """Delete one object, or everything under a prefix/directory."""
    parent, name = _split_parent(uri)
    store = open_store(parent, settings)
    keys = list(store.list(name))
    if keys:
        store.delete(keys)


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
