"""Following a run as a person: live progress while it trains, and a closing summary when it ends.

The follow loop (:class:`trainpod.launcher.Follow`) yields the run's log lines; :class:`Tracker` reads the
trainer's step and eval lines from them (step, loss, tokens/s, val loss) and the backend's status (state,
elapsed time, money spent) from a :class:`StatusPoller` thread, and :class:`LiveView` shows both: a rich
status line under the log on a terminal, plain ``[progress]`` lines (no control characters) otherwise.

:func:`closing_lines` is a pure function of an :class:`Outcome` (what :func:`outcome` gathers when the run
has ended): state, steps, final and best validation loss, duration, cost estimated vs. actual, outputs, and
the next commands.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainpod.summary import human_duration, is_terminal

STEP_RE = re.compile(r"\bstep (\d+)/(\d+) loss ([-+.\deE]+|nan|inf)(?:.*?tokens/s (\d+))?")
EVAL_RE = re.compile(r"\beval step (\d+): val loss ([-+.\deE]+|nan|inf)")


@dataclass
class Tracker:
    """What the run has shown so far. Feed it log lines and statuses; read :meth:`text`."""

    clock: Callable[[], float] = time.monotonic
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    tokens_per_s: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    state: str | None = None
    detail: str = ""
    elapsed_s: float | None = None
    cost_usd: float | None = None
    _first: tuple[float, int] | None = None  # (when, step) of the first step seen: the pace for the ETA
    _last: tuple[float, int] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def feed_line(self, line: str) -> bool:
        """Update from a log line; True when it was a step or eval line."""
        m = STEP_RE.search(line)
        with self.lock:
            if m:
                step, total = int(m.group(1)), int(m.group(2))
                now = self.clock()
                if self._first is None or step < self._first[1]:
                    self._first = (now, step)
                self._last = (now, step)
                self.step, self.total, self.loss = step, total, float(m.group(3))
                if m.group(4):
                    self.tokens_per_s = float(m.group(4))
                return True
            m = EVAL_RE.search(line)
            if m:
                self.val_loss = float(m.group(2))
                if self.best_val_loss is None or self.val_loss < self.best_val_loss:
                    self.best_val_loss = self.val_loss
                return True
        return False

    def feed_status(self, status: Any) -> str | None:
        """Update from a backend status; returns a line when the run's state changed (pod transitions)."""
        with self.lock:
            changed = (status.state, status.detail) != (self.state, self.detail) and status.state != self.state
            previous = self.state
            self.state, self.detail = status.state, status.detail
            if status.elapsed_s is not None:
                self.elapsed_s = status.elapsed_s
            if status.cost_usd is not None:
                self.cost_usd = status.cost_usd
            if status.step is not None and (self.step is None or status.step > self.step):
                self.step = status.step
        if not changed:
            return None
        arrow = f"{previous} -> {status.state}" if previous else status.state
        return f"[trainpod] state: {arrow}" + (f" ({status.detail})" if status.detail else "")

    def eta_s(self) -> float | None:
        with self.lock:
            if not (self._first and self._last and self.total and self.step is not None):
                return None
            (t0, s0), (t1, s1) = self._first, self._last
            if s1 <= s0 or t1 <= t0:
                return None
            return (self.total - self.step) * (t1 - t0) / (s1 - s0)

    def text(self, paid: bool = False) -> str:
        """``step 12/30 (40%), loss 3.2100, 1,234 tokens/s, ETA 12 s, $0.03 so far``."""
        eta = self.eta_s()
        with self.lock:
            parts = []
            if self.step is not None:
                done = f"step {self.step}/{self.total}" if self.total else f"step {self.step}"
                if self.total:
                    done += f" ({100 * self.step // max(self.total, 1)}%)"
                parts.append(done)
            elif self.state:
                parts.append(self.state)
            if self.loss is not None:
                parts.append(f"loss {self.loss:.4f}")
            if self.val_loss is not None:
                parts.append(f"val {self.val_loss:.4f}")
            if self.tokens_per_s is not None:
                parts.append(f"{self.tokens_per_s:,.0f} tokens/s")
            if eta is not None:
                parts.append(f"ETA {human_duration(eta)}")
            if paid and self.cost_usd is not None:
                parts.append(f"${self.cost_usd:.2f} so far")
            return ", ".join(parts) or "waiting for the first step"


class StatusPoller:
    """Asks ``backend.status`` every ``interval`` seconds on a daemon thread (the follow loop blocks in
    ``logs()``), feeding the tracker; state changes go to ``on_change``."""

    def __init__(self, backend: Any, follower: Any, tracker: Tracker, on_change: Callable[[str], None],
                 interval: float = 5.0):
        self.backend, self.follower, self.tracker = backend, follower, tracker
        self.on_change, self.interval = on_change, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainpod-status", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                line = self.tracker.feed_status(self.backend.status(self.follower.handle))
            except Exception:  # a status hiccup must never break following the log
                line = None
            if line:
                self.on_change(line)
            self._stop.wait(self.interval)

    def __enter__(self) -> StatusPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 30)


class LiveView:
    """Log lines with the progress under them: a rich live line on a terminal, plain lines otherwise."""

    def __init__(self, tracker: Tracker, *, paid: bool, stream: Any = None, plain_every_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.tracker, self.paid = tracker, paid
        self.stream = stream or sys.stdout
        self.rich = is_terminal(self.stream)
        self.plain_every_s, self.clock = plain_every_s, clock
        self._last_plain: float | None = None
        self._live: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> LiveView:
        if self.rich:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(self._renderable(), console=Console(file=self.stream), transient=True,
                              refresh_per_second=4, get_renderable=self._renderable)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _renderable(self) -> Any:
        from rich.text import Text

        return Text(self.tracker.text(self.paid), style="bold cyan")

    def line(self, line: str) -> None:
        """A log line (printed as is) that may move the progress."""
        progressed = self.tracker.feed_line(line)
        self.note(line)
        if progressed and not self.rich:
            now = self.clock()
            if self._last_plain is None or now - self._last_plain >= self.plain_every_s:
                self._last_plain = now
                self.note(f"[progress] {self.tracker.text(self.paid)}")

    def note(self, text: str) -> None:
        with self._lock:
            if self._live is not None:
                from rich.markup import escape

                self._live.console.print(escape(text), highlight=False, soft_wrap=True)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()


# ------------------------------------------------------------------------------------------ closing summary
@dataclass(frozen=True)
class Outcome:
    run_id: str
    preset: str
    backend: str
    state: str
    detail: str = ""
    steps: int | None = None
    total_steps: int | None = None
    final_val_loss: float | None = None
    best_val_loss: float | None = None
    best_step: int | None = None
    duration_s: float | None = None
    estimate_usd: float | None = None
    cost_usd: float | None = None
    outputs: str = ""
    local_outputs: str | None = None
    checkpoint_step: int | None = None  # the latest complete checkpoint, for a run that stopped
    interrupted: bool = False  # stopped by Ctrl-C in this CLI


def closing_lines(o: Outcome) -> list[str]:
    """The closing summary: what happened, what it cost, where things are, what to do next."""
    steps = f"{o.steps}/{o.total_steps}" if o.steps is not None and o.total_steps else (
        str(o.steps) if o.steps is not None else "none")
    lines = [f"run {o.run_id}: {o.state}" + (f" ({o.detail})" if o.detail else "")]
    stopped = o.state in ("cancelled", "preempted", "failed") or o.interrupted
    if stopped and o.state != "succeeded":
        if o.checkpoint_step:
            lines.append(f"  stopped at step {o.checkpoint_step} after a checkpoint")
        elif o.steps:
            lines.append(f"  stopped at step {o.steps}; no complete checkpoint found")
    lines.append(f"  steps       {steps}")
    if o.final_val_loss is not None or o.best_val_loss is not None:
        final = f"{o.final_val_loss:.4f}" if o.final_val_loss is not None else "n/a"
        best = f"{o.best_val_loss:.4f}" if o.best_val_loss is not None else "n/a"
        at = f" at step {o.best_step}" if o.best_step else ""
        lines.append(f"  val loss    final {final}, best {best}{at}")
    if o.duration_s is not None:
        lines.append(f"  duration    {human_duration(o.duration_s)}")
    if o.cost_usd is not None or o.estimate_usd is not None:
        actual = f"${o.cost_usd:.2f}" if o.cost_usd is not None else "unknown"
        estimate = f" (estimated ${o.estimate_usd:.2f})" if o.estimate_usd is not None else ""
        lines.append(f"  cost        {actual}{estimate}")
    lines.append(f"  outputs     {o.local_outputs or o.outputs}")
    if o.local_outputs and o.local_outputs != o.outputs:
        lines.append(f"  remote      {o.outputs}")
    nxt = []
    if o.state == "succeeded":
        nxt.append(f"trainpod evaluate {o.run_id}")
    nxt.append(f"trainpod runs report {o.run_id}")
    if o.state != "succeeded":
        from trainpod.launcher import REMOTE_OF

        remote = REMOTE_OF.get(o.backend, o.backend)  # the --remote that chose the backend
        nxt.append(f"trainpod launch {o.preset} --remote {remote} --resume {o.run_id}")
    lines.append("next:")
    lines += [f"  {cmd}" for cmd in nxt]
    return lines


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _checkpoint_step(output: str, settings: Any) -> int | None:
    from trainpod import storage
    from trainpod.errors import TrainpodError

    try:
        uri = storage.latest_complete_checkpoint(output.rstrip("/") + "/checkpoints", settings)
    except (TrainpodError, OSError):
        return None
    if not uri:
        return None
    m = re.search(r"step-(\d+)$", uri.rstrip("/"))
    return int(m.group(1)) if m else None


def outcome(prep: Any, handle: Any, status: Any, tracker: Tracker, *, local_outputs: Path | None = None,
            interrupted: bool = False, wall_s: float | None = None) -> Outcome:
    """Gather the closing summary's facts: the final status, the tracker, metadata.json where it is local."""
    where = local_outputs or (None if str(handle.output).startswith("s3://") else Path(handle.output))
    meta = _read_json(where / "metadata.json") if where else None
    training = (meta or {}).get("training", {})
    best = (meta or {}).get("best_val_loss", tracker.best_val_loss)
    final = (meta or {}).get("final_val_loss", tracker.val_loss)
    steps = training.get("steps") or status.step or tracker.step
    duration = training.get("duration_seconds") or status.elapsed_s or wall_s
    billed = getattr(status, "billed_usd", None)  # what the provider billed, when it says (RunPod v2 billing)
    cost = billed if billed is not None else status.cost_usd if status.cost_usd is not None else tracker.cost_usd
    estimate = prep.plan.estimated_cost_usd if prep is not None else None
    checkpoint = None
    if status.state != "succeeded":
        checkpoint = _checkpoint_step(handle.output, prep.settings if prep is not None else None)
    return Outcome(run_id=handle.run_id, preset=handle.preset, backend=handle.backend, state=status.state,
                   detail=status.detail, steps=steps, total_steps=tracker.total, final_val_loss=final,
                   best_val_loss=best, best_step=(meta or {}).get("best_step"), duration_s=duration,
                   estimate_usd=estimate, cost_usd=cost, outputs=handle.output,
                   local_outputs=str(local_outputs) if local_outputs else None, checkpoint_step=checkpoint,
                   interrupted=interrupted)
