"""Where a run's pieces go besides the local output directory, and where a resumed run finds them.

The trainer always works in a local directory. A :class:`Sink` is the seam between that directory
and the run's real destination (``storage.output``):

* ``start`` (before logging starts): is the run already finished there (its DONE marker)? If not,
  bring back the earlier attempt's logs so a resumed run appends to them.
* ``stage`` (before training): pull the dataset and the newest *complete* checkpoint.
* ``on_checkpoint`` / ``prune``: ship each complete checkpoint; delete local ones only once shipped.
* ``on_finish``: ship the final artefacts with DONE last (its presence means "finished" to every
  reader: ``runs status``, the pod supervisor, a restarted container).
* ``close``: on every exit path, finish queued uploads within the stop grace period.

Locally the output directory *is* the destination: :class:`LocalSink` does nothing. With an
``s3://`` output, :class:`S3Sink` uploads checkpoints in the background (training never waits on
S3), ships logs/status periodically so ``trainpod runs logs -f`` can tail a pod that has no log API,
and resumes from S3 — so a run outlives the pod it ran on.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from trainpod.contract import DONE, ENV_LOG_UPLOAD, ENV_WORK_DIR
from trainpod.errors import TrainpodError
from trainpod.spec import RunSpec

log = logging.getLogger("trainpod_trainer.sink")

# What the periodic shipper uploads (relative to the output): what `runs status` / `runs logs -f` read.
LIVE_FILES = ("status.json", "logs/train.log", "logs/metrics.jsonl")
# Earlier attempts' logs, brought back on resume so the resumed run appends rather than replaces.
RESTORED_FILES = ("logs/train.log", "logs/metrics.jsonl")
LOG_UPLOAD_ENV = ENV_LOG_UPLOAD
DEFAULT_LOG_UPLOAD_SECONDS = 10.0


def work_dir(run_id: str) -> Path:
    """Local scratch for a remote run: ``$TRAINPOD_WORK_DIR`` or a per-run temp directory.

    The path depends only on the run id, so every rank of one pod (and a restarted container with
    the same disk) finds the same directory."""
    base = os.environ.get(ENV_WORK_DIR)
    return Path(base) if base else Path(tempfile.gettempdir()) / "trainpod-work" / run_id


class Sink:
    """Base sink: the destination is the local directory, so every hook is a no-op."""

    def start(self, output: Path) -> bool:
        """Called before logging starts; True if the run already finished at its destination."""
        return False

    def stage(self, data_dir: Path, checkpoints: Path, resume: bool) -> None:
        """Make the dataset and (when ``resume``) the newest complete remote checkpoint local."""

    def fetch(self, data_dir: Path, checkpoints: Path, resume: bool) -> None:
        """:meth:`stage` without becoming the writer: for the first process of another node, whose local
        disk rank 0's staging does not reach (multi-node runs whose output is remote)."""

    def on_checkpoint(self, path: Path) -> None:
        """``path`` is a complete checkpoint directory (manifest written last)."""

    def prune(self, checkpoints: Path, keep: int) -> list[Path]:
        """Apply local retention; returns what was removed."""
        from trainpod_trainer import checkpoint as ckpt

        return ckpt.prune(checkpoints, keep)

    def on_finish(self, output_dir: Path) -> None:
        """``output_dir`` holds the final artefacts, metadata.json and DONE; a remote sink ships DONE
        last, since its presence means "finished" to every reader."""

    def stop_reason(self) -> str | None:
        """Asked after every step: a reason to stop after a checkpoint (the destination refuses writes), or None."""
        return None

    def close(self, timeout: float | None = None) -> None:
        """Every exit path (success, stop, crash): finish queued uploads within the grace period (``timeout``:
        what is left of it after a signal; None: the spec's ``stop_grace_seconds``)."""


class LocalSink(Sink):
    """The output directory *is* the destination."""


class S3Sink(Sink):
    """Ships a run to ``spec.storage.output`` on S3 and resumes it from there.

    Nothing touches the network until :meth:`start`, so a sink that is replaced (``train(spec,
    sink=...)``) or never started costs nothing.
    """

    def __init__(self, spec: RunSpec, settings: Any = None):
        self.spec = spec
        self.settings = settings
        self.interval = float(os.environ.get(LOG_UPLOAD_ENV, DEFAULT_LOG_UPLOAD_SECONDS))
        self.output: Path | None = None
        self.uploader: Any = None
        self.store: Any = None
        self.remote: set[str] = set()  # checkpoint names known to be complete in S3
        self.finished = False
        self._shipped: dict[str, tuple[int, ...]] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()  # ship now (a checkpoint was written) instead of at the next interval
        self._shipper: threading.Thread | None = None
        self._ship_lock = threading.Lock()
        self._refused: Exception | None = None  # S3 refused the credentials (expired/out of scope)

    def start(self, output: Path) -> bool:
        from trainpod import storage

        self.output = output
        self.store = storage.open_store(self.spec.storage.output, self.settings)
        if self.store.exists(DONE):
            return True
        if self.spec.resume:
            for rel in RESTORED_FILES:
                local = output / rel
                if not local.exists() and (data := self.store.read_bytes(rel)) is not None:
                    local.parent.mkdir(parents=True, exist_ok=True)
                    local.write_bytes(data)
        return False

    def stage(self, data_dir: Path, checkpoints: Path, resume: bool) -> None:
        from trainpod import storage

        self.fetch(data_dir, checkpoints, resume)
        self.uploader = storage.CheckpointUploader(self.spec.storage.checkpoints, self.settings,
                                                   keep_last=self.spec.config.hyperparameters.keep_checkpoints)
        self._shipper = threading.Thread(target=self._ship_loop, name="trainpod-log-ship", daemon=True)
        self._shipper.start()

    def fetch(self, data_dir: Path, checkpoints: Path, resume: bool) -> None:
        from trainpod import storage

        dataset = self.spec.storage.dataset
        if storage.is_s3(dataset):
            result = storage.sync_down(dataset, data_dir, self.settings)
            pinned = self.spec.dataset_manifest_sha256
            if pinned and result.manifest_sha256 != pinned:
                raise TrainpodError(
                    f"dataset {dataset}: its manifest digest is {result.manifest_sha256 or 'missing'}, but the "
                    f"RunSpec pins {pinned} (dataset_manifest_sha256)",
                    "the data changed after launch; launch again to pin the current data, or push the old data back",
                )
            log.info("dataset %s -> %s (%d files fetched, %d unchanged, verified by %s)", dataset, data_dir,
                     len(result.transferred), result.unchanged, result.verified_by)
        if resume:  # the newest whose content verifies: a same-size file with other bytes is not complete
            fetched = storage.fetch_latest_checkpoint(self.spec.storage.checkpoints, checkpoints, self.settings,
                                                      on_skip=log.warning)
            if fetched is not None:
                self.remote.add(fetched.name)
                log.info("fetched checkpoint %s from %s", fetched.name, self.spec.storage.checkpoints)

    def on_checkpoint(self, path: Path) -> None:
        if self.uploader is None:
            return
        state = json.loads((path / "trainer_state.json").read_bytes())
        self.uploader.submit(path, is_best=state.get("best_step") == state.get("step"))
        self._wake.set()  # the log in S3 then covers at least what the checkpoint does

    def prune(self, checkpoints: Path, keep: int) -> list[Path]:
        """Like local retention, but a checkpoint is deleted only once it is complete in S3 (a slow
        upload must not lose the only copy); partial leftovers older than the newest complete go."""
        if self.uploader is None:
            return super().prune(checkpoints, keep)
        from trainpod_trainer import checkpoint as ckpt

        shipped = self.remote | {uri.rstrip("/").rpartition("/")[2] for uri in self.uploader.uploaded}
        return ckpt.prune(checkpoints, keep, may_delete=lambda path: path.name in shipped)

    def on_finish(self, output_dir: Path) -> None:
        from trainpod import storage

        self._finish_uploads(raise_errors=True)
        storage.sync_up(output_dir, self.spec.storage.output, self.settings,
                        exclude=("checkpoints/",), last=(DONE,))
        self.finished = True
        log.info("outputs uploaded to %s (DONE last)", self.spec.storage.output)

    def stop_reason(self) -> str | None:
        """Why training must stop now, or None: S3 refused the run's credentials (a pod's STS session expired
        or lacks a right), so nothing more can be shipped; the trainer stops after a checkpoint it keeps locally."""
        from trainpod.storage import S3CredentialsError

        refused = self._refused or next((e for e in (self.uploader.errors if self.uploader else [])
                                         if isinstance(e, S3CredentialsError)), None)
        if refused is None:
            return None
        return (f"S3 refused the run's credentials ({refused}); the newest complete checkpoint in S3 is kept "
                "and the local checkpoints stay in the work directory")

    def close(self, timeout: float | None = None) -> None:
        if self.uploader is None or self.finished:
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        self._finish_uploads(raise_errors=False, timeout=timeout)
        # the final status.json ("stopped"/"failed") and the log's last lines, if SIGKILL is not due first
        if deadline is None or time.monotonic() < deadline:
            self._ship()

    # ------------------------------------------------------------------ internals
    def _finish_uploads(self, raise_errors: bool, timeout: float | None = None) -> None:
        """Stop the shipper, then give queued checkpoint uploads up to ``timeout`` (default: the stop grace)."""
        start = time.monotonic()
        self._stop.set()
        self._wake.set()
        if self._shipper is not None:
            self._shipper.join(timeout)  # a live-file upload in flight may not eat a short grace
        grace = self.spec.stop_grace_seconds if timeout is None else max(timeout - (time.monotonic() - start), 0.0)
        try:
            if not self.uploader.close(timeout=grace):
                log.error("checkpoint uploads did not finish within the %.1fs left of the stop grace", grace)
        except TrainpodError as exc:
            if raise_errors:
                raise
            log.error("%s", exc)

    def _ship_loop(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self._ship()

    def _ship(self) -> None:
        """Upload the live files that changed since the last upload; failures are logged, not fatal."""
        from trainpod.storage import ship_changed

        assert self.output is not None
        with self._ship_lock:
            ship_changed(self.store, self.output, LIVE_FILES, self._shipped, on_error=self._ship_error)

    def _ship_error(self, rel: str, exc: Exception) -> None:
        from trainpod.storage import S3CredentialsError

        if isinstance(exc, S3CredentialsError):
            self._refused = self._refused or exc
        log.warning("could not upload %s: %s (retrying at the next interval)", rel, exc)


def sink_for(spec: RunSpec) -> Sink:
    """The sink for a run's ``storage.output``: S3 for ``s3://``, else the local directory."""
    if spec.storage.output.startswith("s3://"):
        return S3Sink(spec)
    return LocalSink()
