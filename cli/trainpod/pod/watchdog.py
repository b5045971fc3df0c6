"""The pod supervisor's watchdog: the run's deadline from its limits and the pod's price, and the storage calls
it makes (DONE, POD_EXIT) where the run's output outlives the pod."""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import Protocol

from trainpod.contract import (
    POD_EXIT,
    POD_STUCK,
)
from trainpod.spec import RunSpec

log = logging.getLogger("trainpod.pod.supervisor")

EXIT_MARKER = POD_EXIT
STUCK_MARKER = POD_STUCK
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Storage(Protocol):
    """The three storage calls the supervisor makes (trainpod.storage in production)."""

    def exists(self, uri: str) -> bool: ...

    def read_bytes(self, uri: str) -> bytes | None: ...

    def write_bytes(self, uri: str, data: bytes) -> None: ...


class TrainpodStorage:
    """:class:`Storage` over :mod:`trainpod.storage` (imported lazily: boto3 only for s3://)."""

    def exists(self, uri: str) -> bool:
        from trainpod import storage

        return storage.exists(uri)

    def read_bytes(self, uri: str) -> bytes | None:
        from trainpod import storage

        return storage.read_bytes(uri)

    def write_bytes(self, uri: str, data: bytes) -> None:
        from trainpod import storage

        storage.write_bytes(uri, data)


@dataclass(frozen=True)
class Deadline:
    seconds: float | None
    reason: str


def output_uri(spec: RunSpec) -> str:
    """Where DONE and POD_EXIT live: the run's output that outlives the pod (a command's S3 mirror; its pod spec
    writes to pod-local scratch)."""
    return spec.output_uri


def deadline_for(spec: RunSpec, cost_per_hr: float | None) -> Deadline:
    """The earliest of the workload's limits, in seconds from the child's start."""
    cfg = spec.workload
    limits: list[tuple[float, str]] = []
    if cfg.max_runtime_minutes is not None:
        limits.append((cfg.max_runtime_minutes * 60, f"max_runtime_minutes={cfg.max_runtime_minutes:g}"))
    if cfg.max_cost_usd is not None and cost_per_hr:
        limits.append((cfg.max_cost_usd / cost_per_hr * 3600,
                       f"max_cost_usd={cfg.max_cost_usd:g} at ${cost_per_hr:g}/h"))
    if not limits:
        return Deadline(None, "no limit")
    return Deadline(*min(limits))
