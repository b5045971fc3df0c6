"""After submit: following a run to its end (relaunching a preempted one where the backend does), its final state
and exit code, bringing a remote run's outputs home, cancelling, and the run registry of the settings in force."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from trainpod.backends import get_backend
from trainpod.backends.base import TERMINAL_STATES, Backend, RunStatus
from trainpod.runs import RunHandle, RunRegistry
from trainpod.settings import Settings, load_settings
from trainpod.spec import utcnow_iso


class Follow:
    """The run's log lines until it ends; a preempted run is relaunched where the backend does that (a RunPod spot
    pod, bounded) and followed on. ``handle`` is the current attempt's, for the final status."""

    def __init__(self, backend: Backend, handle: RunHandle, settings: Settings | None = None):
        self.backend, self.handle = backend, handle
        self.settings = settings or backend.settings
        self.relaunches = 0

    def __iter__(self) -> Iterator[str]:
        printed = 0  # a relaunched pod restores the log and appends to it: skip what was shown already
        while True:
            for i, line in enumerate(self.backend.logs(self.handle, follow=True)):
                if i >= printed:
                    printed += 1
                    yield line
            status = self.backend.status(self.handle)
            new = None
            if status.state == "preempted":
                new = self.backend.relaunch(self.handle, self.settings)
            if new is None:
                yield from self.backend.release(self.handle, status, self.settings)  # e.g. the pod stopped billing
                return
            self.relaunches += 1
            yield f"[trainpod] run {self.handle.run_id} was preempted: relaunching (resumes from its last checkpoint)"
            self.handle = new


def follow(backend: Backend, handle: RunHandle, settings: Settings | None = None) -> Follow:
    return Follow(backend, handle, settings)


def download_outputs(settings: Settings, handle: RunHandle) -> Path | None:
    """Bring a finished remote run's outputs (adapter, metadata, logs; not checkpoints) to
    ``output_dir/RUN_ID`` and record where in the run registry. None for local outputs."""
    from trainpod import storage

    if not storage.is_s3(handle.output):
        return None
    dest = Path(settings.output_dir).expanduser().resolve() / handle.run_id
    storage.sync_down(handle.output, dest, settings)
    RunRegistry(settings.state_path).update(handle.run_id, downloaded=str(dest), finished=utcnow_iso())
    return dest


def final_status(backend: Backend, handle: RunHandle) -> RunStatus:
    return backend.status(handle)


def exit_code_for(status: RunStatus) -> int:
    if status.exit_code is not None:
        return status.exit_code
    return 0 if status.state == "succeeded" else 1


def is_terminal(status: RunStatus) -> bool:
    return status.state in TERMINAL_STATES


def cancel_run(registry: RunRegistry, run_id: str, settings: Settings | None = None) -> tuple[RunHandle, RunStatus | None]:
    """Cancel ``run_id`` (unique prefixes work). A run that already finished (succeeded, failed or
    cancelled) is left exactly as it is: returns its final status instead of ``None``."""
    handle = registry.get(run_id)
    backend = get_backend(handle.backend, settings)
    status = backend.status(handle)
    if status.state in TERMINAL_STATES:
        return handle, status
    backend.cancel(handle)
    registry.save(handle)
    return handle, None


def registry(settings: Settings | None = None) -> RunRegistry:
    return RunRegistry((settings or load_settings()).state_path)
