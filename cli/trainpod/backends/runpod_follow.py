"""Following a pod run: its status (API + the markers in S3), its log (the pod's SSE stream, else S3), the CLI's
backstop over the watchdog, release (the pod is gone) and cancel."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from trainpod import credentials
from trainpod.backends.base import RunHandle, RunStatus
from trainpod.backends.runpod_plan import (
    read_markers,
)
from trainpod.contract import (
    DONE,
    EXIT_OK,
    POD_EXIT,
    STATUS_JSON,
    state_after_exit,
)
from trainpod.errors import TrainpodError
from trainpod.settings import Settings


class PodObserver:
    # ------------------------------------------------------------------ observe
    def status(self, handle: RunHandle) -> RunStatus:
        from trainpod.backends.runpod_api import RunPodAPIError
        from trainpod.backends.runpod_v2 import V2Client

        api = V2Client.from_settings(self.settings)
        pod = api.pod(handle.provider_id) if handle.provider_id else None
        markers = read_markers(handle.output, self.settings)
        progress = markers.get(STATUS_JSON) or {}
        elapsed = pod.uptime_seconds if pod is not None and pod.started else None
        cost = None
        if elapsed is not None and pod is not None and pod.cost_per_hr:
            cost = round(pod.cost_per_hr * elapsed / 3600, 4)
        billed = None
        if handle.provider_id:
            try:  # what RunPod actually billed (all of this run's pod), next to the estimate
                billed = api.pod_cost(handle.provider_id, since=handle.created)
            except RunPodAPIError:
                billed = None
        common: dict[str, Any] = {"step": progress.get("step"), "loss": progress.get("loss"), "elapsed_s": elapsed,
                                  "cost_usd": cost, "billed_usd": billed,
                                  "estimated_cost_usd": handle.extra.get("estimated_cost_usd")}
        exit_info = markers.get(POD_EXIT)
        if exit_info and exit_info.get("pod_id") not in (None, handle.provider_id):
            exit_info = None  # left by an earlier pod of this run (before a relaunch)
        if DONE in markers:  # finished: how long it trained (its status.json), not the pod's uptime
            common["elapsed_s"] = progress.get("elapsed_s", elapsed)
            return RunStatus(state="succeeded", detail="DONE marker written", exit_code=0, **common)
        if exit_info:
            code = int(exit_info.get("exit_code", 1))
            reason = str(exit_info.get("reason", ""))
            # Resumable: RunPod stopped a reclaimed spot pod with SIGTERM, or the pod stopped with a checkpoint
            # before its S3 session expired (a relaunch renews it). A stop by the pod's watchdog means the budget
            # ended, which a relaunch must not renew.
            reclaimed = bool(handle.extra.get("spot")) and reason.startswith("received SIG")
            state = state_after_exit(code, done=code == EXIT_OK, cancelled=bool(handle.extra.get("cancelled")),
                                     resumable=reclaimed or credentials.EXPIRY_REASON in reason)
            return RunStatus(state=state, detail=reason, exit_code=0 if state == "succeeded" else code, **common)
        if pod is None or pod.desired_status == "TERMINATED":
            if handle.extra.get("cancelled"):
                return RunStatus(state="cancelled", detail="pod terminated by `runs cancel`", **common)
            # Gone without DONE or POD_EXIT: the run is over and did not succeed (the pod died, or was
            # reaped by `runs sweep` after exiting); "unknown" would leave it looking resumable forever.
            state = "preempted" if handle.extra.get("spot") else "failed"
            return RunStatus(state=state, detail="the pod is gone and left no result in the output", **common)
        if pod.failed:
            return RunStatus(state="failed", detail=f"pod {pod.id} is in ERROR (`trainpod runs logs` shows its "
                                                    "system log)", **common)
        if pod.desired_status == "EXITED":
            state = "preempted" if handle.extra.get("spot") else "failed"
            return RunStatus(state=state, detail=f"pod {pod.id} exited ({pod.last_status_change})", **common)
        if not pod.started:
            return RunStatus(state="pending", detail=f"pod {pod.id} is {pod.desired_status.lower()}", **common)
        return RunStatus(state="running", detail=f"pod {pod.id} on {handle.extra.get('gpu_type_id')}", **common)

    def logs(self, handle: RunHandle, follow: bool = False) -> Iterator[str]:
        """``follow``: the pod's own output, live (REST v2 server-sent events: the container's lines, and RunPod's
        system lines — image pull, start errors — prefixed ``[runpod]``), resumed with Last-Event-ID when the
        stream breaks, until the run reaches a final state; the S3 log when the pod's log is unavailable.
        Without ``follow``: ``logs/train.log``, which the trainer uploads to the output periodically."""
        from trainpod.backends.runpod_api import RunPodAPIError

        if follow and handle.provider_id:
            try:
                yield from self._follow_pod(handle)
                return
            except RunPodAPIError as exc:
                yield f"[trainpod] the pod's live log is unavailable ({exc.message}); following the S3 log"
        yield from self._s3_log(handle, follow)

    log_tail = 1000  # lines of backlog a follower starts with

    recheck_s = 30.0  # a follower checks the run's state and limits at least this often while the log streams

    def _follow_pod(self, handle: RunHandle) -> Iterator[str]:
        from trainpod.backends.base import TERMINAL_STATES
        from trainpod.backends.runpod_api import PodNotFoundError
        from trainpod.backends.runpod_v2 import V2Client

        api = V2Client.from_settings(self.settings)
        cursor: str | None = None
        last_line: str | None = None  # the container's last line shown, to catch up from the S3 log at the end
        assert handle.provider_id is not None
        while True:
            checked = time.monotonic()
            stream = api.logs(handle.provider_id, tail=self.log_tail, last_event_id=cursor,
                              timeout_s=max(60.0, 4 * self.poll_s))
            try:
                for event in stream:
                    cursor = event.id or cursor
                    if event.source == "container":
                        last_line = event.line
                        yield event.line
                    else:
                        yield f"[runpod] {event.line}"
                    if time.monotonic() - checked >= self.recheck_s:
                        break  # a stream that never ends must not starve the backstop: check, then resume
            except PodNotFoundError:
                if cursor is None:
                    raise  # never saw the pod's log: the S3 log has the run's output
            finally:
                stream.close()
            status = self.status(handle)
            if status.state in TERMINAL_STATES + ("unknown", "preempted"):
                yield from self._s3_log_after(handle, last_line)
                return
            over = self.over_limit(handle, status)
            if over is not None:
                yield f"[trainpod] {over}: the pod's watchdog has not stopped it; terminating pod {handle.provider_id}"
                self.cancel(handle)
                continue
            time.sleep(min(self.poll_s, 1.0))

    def _s3_log_after(self, handle: RunHandle, last_line: str | None) -> Iterator[str]:
        """The end of the run's S3 log after ``last_line``: a pod that ends right after its last lines is gone
        before its log stream delivered them, and the S3 log (shipped last, before DONE) has them. Nothing when
        the S3 log does not contain ``last_line`` (no way to tell what was shown)."""
        from trainpod import storage

        if last_line is None or not last_line.strip():
            return
        try:
            data = storage.read_bytes(handle.output.rstrip("/") + "/logs/train.log", self.settings) or b""
        except TrainpodError:  # the catch-up is best effort: the run's outcome does not depend on it
            return
        lines = data.decode("utf-8", errors="replace").splitlines()
        for i in range(len(lines) - 1, -1, -1):
            if lines[i] == last_line:
                yield from (line for line in lines[i + 1:] if line)
                return

    def _s3_log(self, handle: RunHandle, follow: bool) -> Iterator[str]:
        from trainpod import storage
        from trainpod.contract import TERMINAL_STATES

        uri = handle.output.rstrip("/") + "/logs/train.log"
        seen = 0
        while True:
            data = storage.read_bytes(uri, self.settings) or b""
            if len(data) > seen:
                text = data[seen:].decode("utf-8", errors="replace")
                complete, _, _rest = text.rpartition("\n")
                if complete:
                    seen += len((complete + "\n").encode("utf-8"))
                    yield from complete.split("\n")
            if not follow:
                return
            status = self.status(handle)
            if status.state in TERMINAL_STATES + ("unknown", "preempted"):
                tail = (storage.read_bytes(uri, self.settings) or b"")[seen:].decode("utf-8", errors="replace")
                yield from (line for line in tail.split("\n") if line)
                return
            over = self.over_limit(handle, status)
            if over is not None:
                yield f"[trainpod] {over}: the pod's watchdog has not stopped it; terminating pod {handle.provider_id}"
                self.cancel(handle)
                continue
            time.sleep(self.poll_s)

    release_timeout_s = 60.0  # how long a pod may take to terminate itself after its run ended

    def release(self, handle: RunHandle, status: RunStatus, settings: Settings | None = None) -> Iterator[str]:
        """The last step of following a run: make sure the pod stopped billing.

        The pod terminates itself once its trainer exits (podside), a few seconds after DONE or POD_EXIT
        appear in S3. This waits for that (up to ``release_timeout_s``) so the CLI never reports a run as
        over while its pod still runs; a pod still there after that (self-terminate failed, pod left
        EXITED) is terminated from here, and the line says so."""
        from trainpod.backends.runpod_v2 import V2Client
        from trainpod.errors import TrainpodError

        if not handle.provider_id:
            return
        api = V2Client.from_settings(self._use(settings))
        deadline = time.monotonic() + self.release_timeout_s
        try:
            while True:
                pod = api.pod(handle.provider_id)
                if pod is None or pod.desired_status == "TERMINATED":
                    return
                if pod.desired_status != "RUNNING" or time.monotonic() >= deadline:
                    break
                time.sleep(min(1.0, self.poll_s))
            yield (f"[trainpod] run {handle.run_id} is {status.state} but pod {handle.provider_id} is still "
                   f"{pod.desired_status}; terminating it")
            api.terminate(handle.provider_id)
        except TrainpodError as exc:
            yield (f"[trainpod] could not confirm that pod {handle.provider_id} ended: {exc.message}; "
                   "check with `trainpod runs sweep`")

    def over_limit(self, handle: RunHandle, status: RunStatus) -> str | None:
        """The CLI's backstop for the pod's watchdog: a limit passed by more than the stop grace period
        (plus two polls) means the watchdog did not act (hung supervisor, wrong price), so the CLI
        that follows the run terminates the pod itself."""
        slack = float(handle.extra.get("stop_grace_seconds") or 60.0) + 2 * self.poll_s
        minutes, usd = handle.extra.get("max_runtime_minutes"), handle.extra.get("max_cost_usd")
        if minutes is not None and status.elapsed_s is not None and status.elapsed_s > minutes * 60 + slack:
            return f"max_runtime_minutes={minutes:g} passed ({status.elapsed_s:.0f}s running)"
        per_hr = handle.extra.get("cost_per_hr") or 0.0
        if usd is not None and status.cost_usd is not None and status.cost_usd > usd + per_hr * slack / 3600:
            return f"max_cost_usd={usd:g} passed (${status.cost_usd:.4f} so far)"
        return None

    def cancel(self, handle: RunHandle) -> None:
        """Terminate the pod (the trainer gets SIGTERM and checkpoints). Idempotent."""
        from trainpod.backends.runpod_v2 import V2Client

        if handle.provider_id:
            V2Client.from_settings(self.settings).terminate(handle.provider_id)
        handle.extra["cancelled"] = True
        self._record_cancel(handle)

