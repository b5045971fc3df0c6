"""Live progress (trainer log lines + backend status -> one progress line) and the closing summary."""

from __future__ import annotations

import io

from trainpod.backends.base import RunStatus
from trainpod.progress import LiveView, Outcome, Tracker, closing_lines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


STEP = "2026-11-28T17:03:55 INFO step {step}/30 loss {loss} lr 0.00926 grad_norm 1.878 tokens/s {tps} mem 471 MB"


def test_tracker_reads_steps_evals_and_estimates_the_eta() -> None:
    clock = Clock()
    t = Tracker(clock=clock)
    assert not t.feed_line("2026-11-28T17:03:38 INFO model: 166,208 parameters")
    assert t.feed_line(STEP.format(step=5, loss=2.85, tps=611))
    clock.now += 10  # 5 more steps in 10 s: 2 s a step, 20 steps to go
    assert t.feed_line(STEP.format(step=10, loss=2.64, tps=1291))
    assert t.feed_line("2026-11-28T17:04:04 INFO eval step 10: val loss 3.3794 (best 3.3794 at step 10)")
    assert t.eta_s() == 40.0
    assert t.text() == "step 10/30 (33%), loss 2.6400, val 3.3794, 1,291 tokens/s, ETA 40 s"
    t.feed_line("2026-11-28T17:04:17 INFO eval step 20: val loss 3.5 (best 3.3794 at step 10)")
    assert (t.val_loss, t.best_val_loss) == (3.5, 3.3794)


def test_status_transitions_and_money_so_far() -> None:
    t = Tracker(clock=Clock())
    assert t.feed_status(RunStatus(state="pending", detail="pod p1 is starting")) == \
        "[trainpod] state: pending (pod p1 is starting)"
    assert t.feed_status(RunStatus(state="pending", detail="pod p1 is starting")) is None  # no change, no line
    line = t.feed_status(RunStatus(state="running", detail="pod p1 on RTX 4090", cost_usd=0.0123, elapsed_s=64))
    assert line == "[trainpod] state: pending -> running (pod p1 on RTX 4090)"
    assert t.text(paid=True) == "running, $0.01 so far"
    assert t.text(paid=False) == "running"


def test_plain_view_prints_log_lines_and_a_progress_line_at_most_every_interval() -> None:
    clock, out = Clock(), io.StringIO()
    t = Tracker(clock=clock)
    with LiveView(t, paid=True, stream=out, plain_every_s=30, clock=clock) as view:
        view.line(STEP.format(step=1, loss=3.0, tps=100))
        clock.now += 5
        view.line(STEP.format(step=2, loss=2.9, tps=100))  # within 30 s of the last progress line: none
        clock.now += 30
        view.line(STEP.format(step=3, loss=2.8, tps=100))
        view.note("[trainpod] state: pending -> running")
    text = out.getvalue()
    assert text.count("[progress] ") == 2 and "[progress] step 3/30 (10%), loss 2.8000" in text
    assert "[trainpod] state: pending -> running" in text
    assert not any(ord(c) < 32 and c != "\n" for c in text)  # no control characters when not a terminal


def test_closing_summary_of_a_finished_run() -> None:
    lines = closing_lines(Outcome(run_id="smoke-1", preset="smoke", backend="runpod", state="succeeded",
                                  detail="DONE", steps=30, total_steps=30, final_val_loss=3.2238,
                                  best_val_loss=3.2, best_step=20, duration_s=65.8, estimate_usd=2.76,
                                  cost_usd=0.41, outputs="s3://b/runs/smoke-1", local_outputs="/tmp/runs/smoke-1"))
    assert lines == [
        "run smoke-1: succeeded (DONE)",
        "  steps       30/30",
        "  val loss    final 3.2238, best 3.2000 at step 20",
        "  duration    1 min 05 s",
        "  cost        $0.41 (estimated $2.76)",
        "  outputs     /tmp/runs/smoke-1",
        "  remote      s3://b/runs/smoke-1",
        "next:",
        "  trainpod evaluate smoke-1",
        "  trainpod runs report smoke-1",
    ]


def test_closing_summary_of_a_stopped_run_says_where_and_how_to_resume() -> None:
    lines = closing_lines(Outcome(run_id="smoke-2", preset="smoke", backend="local", state="cancelled",
                                  steps=12, total_steps=200, checkpoint_step=12, outputs="/r/smoke-2",
                                  interrupted=True))
    assert "  stopped at step 12 after a checkpoint" in lines
    assert lines[-1] == "  trainpod launch smoke --remote local --resume smoke-2"
    assert "  trainpod evaluate smoke-2" not in lines
    no_ckpt = closing_lines(Outcome(run_id="x", preset="p", backend="local", state="failed", steps=3, outputs="/o"))
    assert "  stopped at step 3; no complete checkpoint found" in no_ckpt
