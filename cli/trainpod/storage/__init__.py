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

boto3 is imported lazily (inside functions): ``trainpod --help`` must not pay for it."""

from __future__ import annotations

from trainpod.storage.checkpoints import (
    CheckpointUploader as CheckpointUploader,
)
from trainpod.storage.checkpoints import (
    CorruptCheckpointError as CorruptCheckpointError,
)
from trainpod.storage.checkpoints import (
    download_checkpoint as download_checkpoint,
)
from trainpod.storage.checkpoints import (
    fetch_latest_checkpoint as fetch_latest_checkpoint,
)
from trainpod.storage.checkpoints import (
    latest_complete_checkpoint as latest_complete_checkpoint,
)
from trainpod.storage.hashcache import (
    Entry as Entry,
)
from trainpod.storage.hashcache import (
    HashCache as HashCache,
)
from trainpod.storage.hashcache import (
    SyncResult as SyncResult,
)
from trainpod.storage.objects import (
    delete as delete,
)
from trainpod.storage.objects import (
    exists as exists,
)
from trainpod.storage.objects import (
    read_bytes as read_bytes,
)
from trainpod.storage.objects import (
    ship_changed as ship_changed,
)
from trainpod.storage.objects import (
    write_bytes as write_bytes,
)
from trainpod.storage.s3 import (
    FILE_ATTEMPTS as FILE_ATTEMPTS,
)
from trainpod.storage.s3 import (
    MULTIPART_CHUNKSIZE as MULTIPART_CHUNKSIZE,
)
from trainpod.storage.s3 import (
    MULTIPART_CONCURRENCY as MULTIPART_CONCURRENCY,
)
from trainpod.storage.s3 import (
    MULTIPART_THRESHOLD as MULTIPART_THRESHOLD,
)
from trainpod.storage.s3 import (
    PREFLIGHT_TIMEOUT_S as PREFLIGHT_TIMEOUT_S,
)
from trainpod.storage.s3 import (
    S3CredentialsError as S3CredentialsError,
)
from trainpod.storage.s3 import (
    preflight as preflight,
)
from trainpod.storage.s3 import (
    s3_client as s3_client,
)
from trainpod.storage.stores import (
    LocalStore as LocalStore,
)
from trainpod.storage.stores import (
    S3Store as S3Store,
)
from trainpod.storage.stores import (
    Store as Store,
)
from trainpod.storage.stores import (
    open_store as open_store,
)
from trainpod.storage.sync import (
    dataset_manifest as dataset_manifest,
)
from trainpod.storage.sync import (
    dataset_manifest_digest as dataset_manifest_digest,
)
from trainpod.storage.sync import (
    list_uri as list_uri,
)
from trainpod.storage.sync import (
    manifest_changes as manifest_changes,
)
from trainpod.storage.sync import (
    read_prefix_manifest as read_prefix_manifest,
)
from trainpod.storage.sync import (
    sync_down as sync_down,
)
from trainpod.storage.sync import (
    sync_up as sync_up,
)
from trainpod.storage.uri import (
    BEST_MARKER as BEST_MARKER,
)
from trainpod.storage.uri import (
    DEFAULT_WORKERS as DEFAULT_WORKERS,
)
from trainpod.storage.uri import (
    META_DIR as META_DIR,
)
from trainpod.storage.uri import (
    PREFIX_MANIFEST as PREFIX_MANIFEST,
)
from trainpod.storage.uri import (
    PUSH_MARKER as PUSH_MARKER,
)
from trainpod.storage.uri import (
    TMP_PREFIX as TMP_PREFIX,
)
from trainpod.storage.uri import (
    S3Location as S3Location,
)
from trainpod.storage.uri import (
    is_s3 as is_s3,
)
from trainpod.storage.uri import (
    join_uri as join_uri,
)
from trainpod.storage.uri import (
    log as log,
)
from trainpod.storage.uri import (
    parse_s3_uri as parse_s3_uri,
)
