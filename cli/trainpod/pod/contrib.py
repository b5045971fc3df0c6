"""The container contract for your own training code, as a tiny stdlib-only helper.

trainpod runs a ``[jobs.NAME]`` command with these environment variables set (locally, in Docker, on a pod):

    TRAINPOD_DATA_DIR            where to read data (already pulled from S3), absent when the job has no data
    TRAINPOD_OUTPUT_DIR          where to write outputs; ``checkpoints/step-NNNNNNNN`` under it (synced to S3)
    TRAINPOD_RESUME_DIR          the latest *complete* checkpoint of this run, when relaunched with --resume
    TRAINPOD_PREVIOUS_OUTPUT     the previous pipeline stage's output directory (pipelines only)
    TRAINPOD_STOP_GRACE_SECONDS  how long you have after SIGTERM to checkpoint and exit

SIGTERM means "checkpoint now, then exit" (exit code :data:`EXIT_STOPPED`); a checkpoint counts only once its
manifest is written, last. Nothing here imports beyond the stdlib, :mod:`trainpod.contract` and
:mod:`trainpod.manifest` (both stdlib only), so the helper is cheap to import and safe to vendor into a project:
copy this file, contract.py and manifest.py.

    from trainpod.pod import contrib
    contrib.install_stop_handler()
    start = contrib.resume_step()                  # 0 on a fresh run
    for step in range(start + 1, total + 1):
        ...
        if step % 50 == 0 or contrib.stop_requested():
            with contrib.checkpoint(step) as d:    # manifest written when the block ends without error
                (d / "state.json").write_text(...)
        if contrib.stop_requested():
            raise SystemExit(contrib.finish(contrib.EXIT_STOPPED))
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from trainpod.contract import (
    ENV_DATA_DIR,
    ENV_OUTPUT_DIR,
    ENV_PREVIOUS_OUTPUT,
    ENV_RESUME_DIR,
    ENV_STOP_GRACE,
    record_exit_code,
)
from trainpod.contract import EXIT_STOPPED as CONTRACT_EXIT_STOPPED
from trainpod.manifest import checkpoint_name, checkpoint_step, list_checkpoints, verify_dir, write_manifest

# the contract's names, under the short names job code uses (trainpod.contract holds the values)
DATA_ENV = ENV_DATA_DIR
OUTPUT_ENV = ENV_OUTPUT_DIR
RESUME_ENV = ENV_RESUME_DIR
PREVIOUS_ENV = ENV_PREVIOUS_OUTPUT
GRACE_ENV = ENV_STOP_GRACE
# "stopped after a complete checkpoint": the built-in trainer's code too (backends read it as resumable)
EXIT_STOPPED = CONTRACT_EXIT_STOPPED

__all__ = ["DATA_ENV", "EXIT_STOPPED", "GRACE_ENV", "OUTPUT_ENV", "PREVIOUS_ENV", "RESUME_ENV", "checkpoint",
           "checkpoints_dir", "data_dir", "finish", "install_stop_handler", "output_dir", "previous_output",
           "resume_dir", "resume_step", "stop_grace_seconds", "stop_requested"]

_stop = threading.Event()


def _dir(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value) if value else None


def data_dir() -> Path | None:
    """The job's data directory, or None when the job declares no ``data``."""
    return _dir(DATA_ENV)


def output_dir() -> Path:
    """Where outputs go (created if missing). Outside trainpod it must be set by hand."""
    out = _dir(OUTPUT_ENV)
    if out is None:
        raise RuntimeError(f"{OUTPUT_ENV} is not set: run through `trainpod launch JOB`, or export it for a dry test")
    out.mkdir(parents=True, exist_ok=True)
    return out


def checkpoints_dir() -> Path:
    return output_dir() / "checkpoints"


def resume_dir() -> Path | None:
    """The latest complete checkpoint to continue from, or None on a fresh run."""
    return _dir(RESUME_ENV)


def resume_step() -> int:
    """The step of :func:`resume_dir` (0 when there is nothing to resume)."""
    d = resume_dir()
    return (checkpoint_step(d.name) or 0) if d is not None else 0


def previous_output() -> Path | None:
    """The previous pipeline stage's output directory, or None outside a pipeline / for its first stage."""
    return _dir(PREVIOUS_ENV)


def stop_grace_seconds() -> float:
    return float(os.environ.get(GRACE_ENV) or 60)


def finish(code: int) -> int:
    """Your script's exit code, recorded for trainpod's launch wrapper: under ``launcher = "torchrun"`` torchrun
    alone reports 1 for any failing rank, so ``raise SystemExit(contrib.finish(main()))`` keeps
    :data:`EXIT_STOPPED` (resumable) apart from a crash. A no-op outside a launch wrapper."""
    return record_exit_code(code)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stop.set()


def install_stop_handler() -> None:
    """Turn SIGTERM/SIGINT into :func:`stop_requested` instead of an immediate exit (main thread only)."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def stop_requested() -> bool:
    return _stop.is_set()


@contextmanager
def checkpoint(step: int, *, keep_last: int = 2) -> Iterator[Path]:
    """Yield an empty ``checkpoints/step-NNNNNNNN`` directory; write its manifest last when the block succeeds.

    A block that raises leaves no manifest, so the directory stays partial and resume skips it. Afterwards
    only the newest ``keep_last`` complete checkpoints are kept (partial ones older than them go too).
    """
    if keep_last < 1:
        raise ValueError("keep_last must be >= 1")
    d = checkpoints_dir() / checkpoint_name(step)
    if d.exists():  # a partial leftover of an interrupted attempt at this same step
        shutil.rmtree(d)
    d.mkdir(parents=True)
    yield d
    write_manifest(d, step=step)
    complete = 0
    for _, path in list_checkpoints(checkpoints_dir()):
        if complete >= keep_last:
            shutil.rmtree(path, ignore_errors=True)
        elif not verify_dir(path, check_hashes=False):
            complete += 1
