"""``python -m trainpod.pod.jobrun``: the supervisor a custom job runs under (locally, as PID 1 in a container).

The linear story, the same as the built-in trainer's:

    RunSpec (a command workload) ─▶ pull data (s3://) ─▶ pick the resume checkpoint (local, else the S3 mirror)
    ─▶ run the command with the TRAINPOD_* contract, output teed to logs/train.log
    ─▶ mirror the output dir to S3 every sync_interval_seconds (default 60) and at exit, the log and
       status.json every log_sync_interval_seconds (default 10); TRAINPOD_(LOG_)SYNC_INTERVAL override them
    ─▶ status.json, DONE (exit 0 only) ─▶ final sync, DONE uploaded last ─▶ exit with the command's code

SIGTERM/SIGINT are forwarded to the command, which checkpoints and exits (trainpod.pod.contrib); after the grace
period it is killed. ``max_runtime_minutes`` sends the same SIGTERM. Imports stay light (no torch); boto3 loads
only when the job touches S3.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType

from trainpod.contract import (
    DONE,
    ENV_DATA_DIR,
    ENV_LOG_SYNC_INTERVAL,
    ENV_OUTPUT_DIR,
    ENV_PREVIOUS_OUTPUT,
    ENV_RESUME_DIR,
    ENV_RUN_ID,
    ENV_STOP_GRACE,
    ENV_SYNC_INTERVAL,
    EXIT_STOPPED,
    LOGS_DIR,
    POD_EXIT,
    STATUS_JSON,
    TRAIN_LOG,
    shell_exit_code,
)
from trainpod.errors import ConfigError
from trainpod.launchcmd import job_argv
from trainpod.manifest import MANIFEST_NAME, atomic_write_bytes, latest_complete
from trainpod.spec import SPEC_ENV, CommandWorkload, RunSpec

SYNC_INTERVAL_ENV = ENV_SYNC_INTERVAL
LOG_SYNC_INTERVAL_ENV = ENV_LOG_SYNC_INTERVAL


def _log(msg: str) -> None:
    print(f"[trainpod.pod.jobrun] {msg}", flush=True)


def _load(path: str | None) -> RunSpec:
    if not path and not os.environ.get(SPEC_ENV):
        raise SystemExit(f"no job spec: pass --spec FILE or set {SPEC_ENV}")
    spec = RunSpec.load(path)
    if not isinstance(spec.workload, CommandWorkload):
        raise SystemExit(f"run {spec.run_id} runs the built-in trainer: start it with python -m trainpod_trainer")
    return spec


def _data_dir(spec: RunSpec) -> str | None:
    data = spec.storage.dataset or None
    if not data or not data.startswith("s3://"):
        return data
    from trainpod.storage import sync_down

    local = Path(tempfile.gettempdir()) / "trainpod-data" / spec.run_id
    result = sync_down(data, local)
    _log(f"pulled {data} -> {local} ({len(result.transferred)} files)")
    return str(local)


# what a resumed run on a new machine does not take back from its mirror: checkpoints (only the one it resumes from
# is fetched), sync bookkeeping, and the previous attempt's end markers
_NOT_RESTORED = ("checkpoints/", ".trainpod/")
_NOT_RESTORED_FILES = (DONE, POD_EXIT, STATUS_JSON)


def _restore_outputs(uri: str, out: Path) -> int:
    """Bring back what the mirror holds besides checkpoints (the log, the script's own metrics and files), so a run
    resumed on a new machine appends to them instead of overwriting them in S3 with a fresh start."""
    from trainpod.storage import open_store

    store = open_store(uri)
    restored = 0
    for rel in sorted(store.list()):
        if rel.startswith(_NOT_RESTORED) or rel in _NOT_RESTORED_FILES:
            continue
        store.download(rel, out / rel)  # temp name + rename: an interrupted restore leaves no half file
        restored += 1
    return restored


def _resume_dir(job: CommandWorkload, out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from: the latest complete one here, else (a machine without one, e.g. a relaunched
    pod) the mirror's, fetched after the mirror's other files. A machine with its checkpoints keeps its own files."""
    if not resume:
        return None
    ckpts = out / "checkpoints"
    found = latest_complete(ckpts)
    if found is not None or not job.sync_uri:
        return found
    from trainpod.storage import fetch_latest_checkpoint

    if restored := _restore_outputs(job.sync_uri, out):
        _log(f"restored {restored} output files from {job.sync_uri}")
    return fetch_latest_checkpoint(job.sync_uri.rstrip("/") + "/checkpoints", ckpts)  # content verified


def _interval(var: str, default: float) -> float:
    """A sync interval: the supervisor's environment overrides the job table's ``*_interval_seconds``."""
    raw = os.environ.get(var)
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{var}={raw!r}: not a number of seconds", f"set {var} to e.g. 60") from None
    return value if value > 0 else default


class _Mirror:
    """Background mirror of the output dir to ``sync_uri``; checkpoint manifests (and DONE) go up last.

    The whole dir goes up every ``interval`` seconds; the log and status.json, which `trainpod runs logs -f` and
    `runs status` read from S3, every ``live_interval`` seconds when they changed (as the built-in trainer does)."""

    LIVE = (TRAIN_LOG, STATUS_JSON)

    def __init__(self, out: Path, uri: str, interval: float, live_interval: float = 10.0):
        from trainpod.storage import open_store

        self.out, self.uri, self.interval, self.live_interval = out, uri, interval, live_interval
        self._store = open_store(uri)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sent: dict[str, tuple[int, ...]] = {}
        self._thread = threading.Thread(target=self._loop, name="trainpod-mirror", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        next_full = time.monotonic() + self.interval
        while not self._stop.wait(min(self.interval, self.live_interval)):
            try:
                if time.monotonic() >= next_full:
                    next_full = time.monotonic() + self.interval
                    self.sync()
                else:
                    self.sync_live()
            except Exception as exc:  # a failed round is retried next round and at exit
                _log(f"sync to {self.uri} failed, will retry: {exc}")

    def sync_live(self) -> None:
        from trainpod.storage import ship_changed

        with self._lock:
            ship_changed(self._store, self.out, self.LIVE, self._sent)

    def sync(self, final: bool = False) -> None:
        from trainpod.storage import sync_up

        last = sorted(p.relative_to(self.out).as_posix() for p in self.out.glob(f"checkpoints/*/{MANIFEST_NAME}"))
        if final and (self.out / DONE).exists():
            last.append(DONE)
        with self._lock:
            sync_up(self.out, self.uri, exclude=(DONE,) if not final else (), last=last)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
        self.sync(final=True)


def run(spec: RunSpec) -> int:
    job = spec.workload
    assert isinstance(job, CommandWorkload)
    out = Path(spec.storage.output)
    (out / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    (out / DONE).unlink(missing_ok=True)
    atomic_write_bytes(out / STATUS_JSON, json.dumps({"state": "running", "run_id": spec.run_id}).encode())
    env = {**os.environ, **job.env, ENV_OUTPUT_DIR: str(out), ENV_STOP_GRACE: f"{spec.stop_grace_seconds:g}",
           ENV_RUN_ID: spec.run_id}
    env.pop(SPEC_ENV, None)  # the command gets the contract, not trainpod's internal spec
    data = _data_dir(spec)
    for var, value in ((ENV_DATA_DIR, data), (ENV_PREVIOUS_OUTPUT, spec.init_from)):
        if value:
            env[var] = value
    resume = _resume_dir(job, out, spec.resume)
    if resume is not None:
        env[ENV_RESUME_DIR] = str(resume)
        _log(f"resuming from {resume}")
    mirror = None
    if job.sync_uri:
        mirror = _Mirror(out, job.sync_uri, _interval(SYNC_INTERVAL_ENV, job.sync_interval_seconds),
                         _interval(LOG_SYNC_INTERVAL_ENV, job.log_sync_interval_seconds))
        mirror.start()

    argv = job_argv(spec, python=sys.executable)
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable  # the interpreter trainpod runs under (the image's venv, or the local one)
    _log(f"running {argv} in {job.project_dir}")
    proc = subprocess.Popen(argv, cwd=job.project_dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    stopping = threading.Event()

    def stop(reason: str) -> None:
        if stopping.is_set() or proc.poll() is not None:
            return
        stopping.set()
        _log(f"{reason}: asking the command to checkpoint and stop (SIGTERM, {spec.stop_grace_seconds:g}s grace)")
        proc.send_signal(signal.SIGTERM)
        timer = threading.Timer(spec.stop_grace_seconds, lambda: proc.poll() is None and proc.kill())
        timer.daemon = True
        timer.start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if job.max_runtime_minutes:
        guard = threading.Timer(job.max_runtime_minutes * 60, stop, args=("max_runtime_minutes reached",))
        guard.daemon = True
        guard.start()

    assert proc.stdout is not None
    with open(out / TRAIN_LOG, "ab") as log:
        for line in proc.stdout:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            log.write(line)
            log.flush()
    code = shell_exit_code(proc.wait())
    reason = "finished" if code == 0 else ("stopped after a checkpoint" if code == EXIT_STOPPED else f"exit {code}")
    atomic_write_bytes(out / STATUS_JSON, json.dumps({"state": "exited", "exit_code": code, "reason": reason,
                                                        "run_id": spec.run_id}).encode())
    if code == 0:
        atomic_write_bytes(out / DONE, f"{spec.run_id}\n".encode())
    if data and data != spec.storage.dataset:  # a pulled copy: do not let container disks / /tmp fill up across runs
        shutil.rmtree(data, ignore_errors=True)
    if mirror is not None:
        try:
            mirror.close()
        except Exception as exc:  # outputs that are not in S3 are not done: say so, and do not claim DONE
            (out / DONE).unlink(missing_ok=True)
            reason = f"final sync to {job.sync_uri} failed: {exc}"
            atomic_write_bytes(out / STATUS_JSON, json.dumps({"state": "exited", "exit_code": 1, "reason": reason,
                                                                "run_id": spec.run_id}).encode())
            _log(reason)
            return code or 1
        _log(f"outputs mirrored to {job.sync_uri}")
    _log(reason)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainpod.pod.jobrun", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", help=f"job spec file (default: ${SPEC_ENV})")
    args = parser.parse_args(argv)
    return run(_load(args.spec))


if __name__ == "__main__":
    raise SystemExit(main())
