"""Where things are: local paths and ``s3://bucket/prefix`` URIs, and the layout names every store shares."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trainpod.errors import TrainpodError
from trainpod.manifest import (
    MANIFEST_NAME,
)

if TYPE_CHECKING:
    pass


log = logging.getLogger("trainpod.storage")

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


def _tmp_name(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}-{threading.get_ident()}")
