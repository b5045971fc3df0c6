"""``--remote local``: the trainer as a subprocess of this machine.

plan() is pure: it builds the trainer's command line (``python -m trainpod_trainer`` or torchrun, via
:func:`trainpod.launchcmd.trainer_command`) with the spec file under the run's output directory, and
imports nothing heavy. submit() writes the spec atomically and starts the trainer in its own
session (so cancel() can signal the whole process group, torchrun workers included) with stdout and
stderr in ``logs/launcher.log``. status() reads pid liveness, ``status.json`` and ``DONE``, which the
trainer writes; logs() tails ``logs/train.log`` (or ``launcher.log`` until that exists).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from trainpod.backends.base import BackendBase, LaunchPlan, RunHandle, RunStatus
from trainpod.contract import (
    CONTAINER_SECRETS,
    DONE,
    ENV_PREVIOUS_OUTPUT,
    LOCAL_SECRETS,
    LOGS_DIR,
    STATUS_JSON,
    TRAIN_LOG,
    exit_detail,
    secret_env_names,
    secret_env_values,
    state_after_exit,
)
from trainpod.errors import UnsupportedError
from trainpod.launchcmd import job_argv, workload_command
from trainpod.runs import RunRegistry
from trainpod.settings import Settings
from trainpod.spec import CommandWorkload, RunSpec, TrainerWorkload, utcnow_iso

SPEC_NAME = "run_spec.launch.json"
# processes started by this process: their real exit code is known without guessing
_children: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) is not running
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ended(out: Path, status: dict) -> float | None:
    """When a run that is no longer running stopped: DONE's ``finished``, else status.json's ``updated``,
    else the newest of its status/log files' modification times."""
    from datetime import datetime

    for stamp in ((_read_json(out / DONE) or {}).get("finished"), status.get("updated")):
        if isinstance(stamp, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(stamp).timestamp()
    times = [p.stat().st_mtime for p in (out / STATUS_JSON, out / TRAIN_LOG, out / "logs" / "launcher.log")
             if p.exists()]
    return max(times) if times else None


class LocalBackend(BackendBase):
    name = "local"

    def unsupported(self, spec: RunSpec) -> list[str]:
        reasons = []
        work, data = spec.workload, spec.storage.dataset
        if spec.storage.output.startswith("s3://"):
            reasons.append("--remote local writes to a local directory; unset TRAINPOD_STORAGE_URI "
                           "or use --remote docker/runpod for S3 outputs")
        if isinstance(work, TrainerWorkload) and data.startswith("s3://"):
            reasons.append(f"dataset '{work.config.dataset_name}' is in S3 ({data}); "
                           "pull it with `trainpod data pull` and point the dataset table at the local copy")
        if isinstance(work, CommandWorkload) and data and not data.startswith("s3://") and not Path(data).is_dir():
            reasons.append(f"jobs.{work.name}.data: {data} is not a directory")  # s3:// data: the supervisor pulls it
        if spec.launch.nnodes > 1:
            reasons.append("--remote local runs on one node; nnodes > 1 needs --remote runpod")
        return reasons

    def plan(self, spec: RunSpec, settings: Settings | None = None) -> LaunchPlan:
        settings = self._use(settings)
        reasons = self.unsupported(spec)
        if reasons:
            raise UnsupportedError("; ".join(reasons))
        out = spec.storage.output
        argv, env = workload_command(spec, spec_path=str(Path(out) / SPEC_NAME), python=sys.executable)
        notes = [f"outputs, checkpoints and logs under {out}"]
        workdir, secrets = out, LOCAL_SECRETS  # this machine's own S3 credentials are in its environment
        if isinstance(spec.workload, CommandWorkload):
            workdir, secrets = spec.workload.project_dir, CONTAINER_SECRETS
            notes.insert(0, f"runs {job_argv(spec)} in {workdir}")
            if spec.workload.sync_uri:
                notes.append(f"mirrored to {spec.workload.sync_uri}")
        if spec.init_from:  # a pipeline stage's input, as a local process reads it
            env[ENV_PREVIOUS_OUTPUT] = spec.init_from
        return LaunchPlan(
            backend=self.name, run_id=spec.run_id, command=argv, env={"PYTHONUNBUFFERED": "1", **env},
            secret_env=secret_env_names(settings.secrets(), secrets), workdir=workdir, spec=spec, notes=notes,
        )

    def submit(self, plan: LaunchPlan, settings: Settings | None = None) -> RunHandle:
        settings = self._use(settings)
        spec = plan.spec
        out = Path(spec.storage.output)
        (out / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        spec.write(out / SPEC_NAME)
        env = {**os.environ, **plan.env, **secret_env_values(plan.secret_env, settings.secrets())}
        # a resumed run must not report the previous attempt's status.json as its own
        (out / STATUS_JSON).unlink(missing_ok=True)
        train_log = out / "logs" / "train.log"
        log_offset = train_log.stat().st_size if train_log.exists() else 0  # a resumed run appends
        with open(out / "logs" / "launcher.log", "ab") as log:
            proc = subprocess.Popen(plan.command, cwd=plan.workdir or out, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        _children[proc.pid] = proc
        handle = RunHandle(run_id=spec.run_id, backend=self.name, preset=spec.workload.name,
                           provider_id=str(proc.pid), output=str(out), created=utcnow_iso(),
                           extra={"started": time.time(), "command": plan.command,
                                  "stop_grace_seconds": spec.stop_grace_seconds, "log_offset": log_offset,
                                  **spec.registry_extra()})
        RunRegistry(settings.state_path).save(handle)
        return handle

    # ------------------------------------------------------------------ observe
    def _exit_code(self, handle: RunHandle) -> int | None:
        pid = int(handle.provider_id or 0)
        child = _children.get(pid)
        if child is not None:
            code = child.poll()
            # killed by a signal: report it the way a shell does (128 + signal number)
            return None if code is None else (128 - code if code < 0 else code)
        status = _read_json(Path(handle.output) / STATUS_JSON) or {}
        code = status.get("exit_code")
        return code if isinstance(code, int) else None

    def status(self, handle: RunHandle) -> RunStatus:
        out = Path(handle.output)
        pid = int(handle.provider_id or 0)
        alive = bool(pid) and _alive(pid)
        st = _read_json(out / STATUS_JSON) or {}
        step, loss = st.get("step"), st.get("loss")
        started = float(handle.extra.get("started", time.time()))
        # a run that is over ran until it last wrote its status (DONE's time when it finished), not until now
        end = time.time() if alive else _ended(out, st) or time.time()
        common = {"step": step, "loss": loss, "elapsed_s": round(max(0.0, end - started), 1)}
        if alive:
            return RunStatus(state="running" if st else "pending", detail=f"pid {pid}", **common)
        code = self._exit_code(handle)
        state = state_after_exit(code, done=(out / DONE).exists(), cancelled=bool(handle.extra.get("cancelled")))
        if state == "succeeded":
            return RunStatus(state=state, exit_code=0, detail=DONE, **common)
        detail = st.get("reason") or exit_detail(code)
        if state == "failed" and code is None:
            code = 1
        return RunStatus(state=state, exit_code=code, detail=detail, **common)

    def logs(self, handle: RunHandle, follow: bool = False) -> Iterator[str]:
        """Lines of logs/train.log (the launcher log until the trainer has opened it); with ``follow``,
        start where this attempt began (a resumed run appends to the same file) and keep tailing until
        the process has exited and the file is drained."""
        out = Path(handle.output) / "logs"
        pid = int(handle.provider_id or 0)
        launcher, train = out / "launcher.log", out / "train.log"
        offset = int(handle.extra.get("log_offset", 0)) if follow else 0
        path = train if train.exists() else launcher
        pos, buf = (offset if path == train else 0), b""
        draining = False  # the process has exited: read what is left, then stop
        while True:
            if path == launcher and train.exists():
                # the trainer's own log starts here; the launcher log so far held only import noise
                path, pos, buf = train, offset, b""
            chunk = b""
            if path.exists():
                with path.open("rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read()
                    pos = fh.tell()
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace")
                continue
            if not follow or draining:
                if follow and path == train:
                    yield from self._launcher_errors(launcher)
                if buf:
                    yield buf.decode("utf-8", "replace")
                return
            if not (pid and _alive(pid)):
                draining = True
                continue
            time.sleep(0.2)

    @staticmethod
    def _launcher_errors(launcher: Path) -> Iterator[str]:
        """A crash before logging was set up (an import error) is only in launcher.log: surface it."""
        try:
            text = launcher.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        if "Traceback (most recent call last)" in text:
            yield "---- launcher.log (process output outside train.log) ----"
            yield from text[text.rindex("Traceback (most recent call last)"):].splitlines()

    def cancel(self, handle: RunHandle) -> None:
        """SIGTERM the process group (the trainer checkpoints), SIGKILL after the grace period."""
        pid = int(handle.provider_id or 0)
        if not pid or not _alive(pid):
            return
        handle.extra["cancelled"] = True
        self._record_cancel(handle)
        grace = float(handle.extra.get("stop_grace_seconds", 60.0))
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        child = _children.get(pid)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
