"""A RunPod Instant Cluster node's place (NODE_RANK, NUM_NODES, ...) and its log, shipped to the run's output."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from trainpod.contract import (
    node_log,
)
from trainpod.errors import TrainpodError
from trainpod.pod.watchdog import log, output_uri


@dataclass(frozen=True)
class ClusterNode:
    """This container's place in a RunPod Instant Cluster (from ``NODE_RANK`` and ``NUM_NODES``)."""

    rank: int
    count: int

    @classmethod
    def from_env(cls, env: Any) -> ClusterNode | None:
        try:
            count, rank = int(env.get("NUM_NODES") or 1), int(env.get("NODE_RANK", ""))
        except ValueError:
            return None
        return cls(rank, count) if count > 1 and 0 <= rank < count else None


class NodeLog:
    """A cluster node's launch-line output, passed through to the container log and kept (the last
    ``MAX_BYTES``) at ``OUTPUT/logs/node-N.log``, uploaded every ``INTERVAL_S`` and when the child exits: the
    node's log must outlive the cluster (deleted as a whole when the run ends or fails)."""

    MAX_BYTES = 2 * 1024 * 1024
    INTERVAL_S = 10.0

    def __init__(self, supervisor: Any, child: subprocess.Popen[bytes]):
        # supervisor: the node's trainpod.pod.supervisor.Supervisor (its spec, storage, node, ids and command)
        import threading

        node = supervisor.node
        assert node is not None and child.stdout is not None
        self.uri = output_uri(supervisor.spec) + "/" + node_log(node.rank)
        self.storage = supervisor.storage
        self.buf = bytearray(f"[trainpod] node {node.rank} of {node.count}, cluster {supervisor.cluster_id}, pod "
                             f"{supervisor.pod_id}: {' '.join(supervisor.command)}\n".encode())
        self.lock = threading.Lock()
        self.dirty = True
        self.done = threading.Event()
        self.reader = threading.Thread(target=self._read, args=(child.stdout,), name="node-log", daemon=True)
        self.shipper = threading.Thread(target=self._ship_loop, name="node-log-ship", daemon=True)
        self.reader.start()
        self.shipper.start()

    def _read(self, stream: Any) -> None:
        out = getattr(sys.stdout, "buffer", None)
        for line in iter(stream.readline, b""):
            if out is not None:
                out.write(line)
                out.flush()
            with self.lock:
                self.buf += line
                if len(self.buf) > self.MAX_BYTES:
                    del self.buf[: len(self.buf) - self.MAX_BYTES]
                self.dirty = True

    def _ship_loop(self) -> None:
        while not self.done.wait(self.INTERVAL_S):
            self.ship()

    def ship(self) -> None:
        with self.lock:
            if not self.dirty:
                return
            data, self.dirty = bytes(self.buf), False
        try:
            self.storage.write_bytes(self.uri, data)
        except TrainpodError as exc:  # the log is a convenience: never a reason to stop the run
            log.warning("cannot upload this node's log to %s: %s", self.uri, exc.message)

    def close(self) -> None:
        self.reader.join(timeout=10)
        self.done.set()
        self.ship()
