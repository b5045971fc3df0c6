"""A user's own training script, run by trainpod as ``[jobs.byo-example]`` (see training.toml here).

It fits y = w*x + b by SGD on ``$TRAINPOD_DATA_DIR/train.jsonl`` — plain Python so the example needs no
dependencies — and follows the trainpod contract through :mod:`trainpod.pod.contrib`:
  * checkpoints under ``$TRAINPOD_OUTPUT_DIR/checkpoints/step-NNNNNNNN`` (manifest last) every ``--save-every``;
  * on SIGTERM: checkpoint now, exit 3 (EXIT_STOPPED); relaunched with --resume it continues from
    ``$TRAINPOD_RESUME_DIR``;
  * ``--init-from-previous`` (second pipeline stage): start from ``$TRAINPOD_PREVIOUS_OUTPUT/model.json``.
"""

from __future__ import annotations

import argparse
import json
import time

from trainpod.pod import contrib


def load_rows() -> list[tuple[float, float]]:
    data = contrib.data_dir()
    if data is None:
        raise SystemExit("this example needs data: set `data = \"data\"` in its [jobs] table")
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines() if line.strip()]
    return [(float(r["x"]), float(r["y"])) for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--save-every", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--step-seconds", type=float, default=0.0, help="pretend each step is slow")
    parser.add_argument("--init-from-previous", action="store_true")
    args = parser.parse_args()

    contrib.install_stop_handler()
    rows = load_rows()
    out = contrib.output_dir()
    state = {"w": 0.0, "b": 0.0, "step": 0, "initialised_from": None, "resumed_from": None}
    if args.init_from_previous:
        prev = contrib.previous_output()
        if prev is None:
            raise SystemExit("--init-from-previous: no previous stage (TRAINPOD_PREVIOUS_OUTPUT is unset)")
        model = json.loads((prev / "model.json").read_text())
        state.update(w=model["w"], b=model["b"], initialised_from=str(prev))
    resume = contrib.resume_dir()
    if resume is not None:
        state.update(json.loads((resume / "state.json").read_text()), resumed_from=resume.name)
    print(f"start at step {state['step']} (resume: {state['resumed_from']}, init: {state['initialised_from']})",
          flush=True)

    with open(out / "metrics.jsonl", "a") as metrics:
        for step in range(state["step"] + 1, args.steps + 1):
            x, y = rows[step % len(rows)]
            err = state["w"] * x + state["b"] - y
            state["w"] -= args.lr * err * x
            state["b"] -= args.lr * err
            state["step"] = step
            metrics.write(json.dumps({"step": step, "loss": err * err}) + "\n")
            metrics.flush()
            time.sleep(args.step_seconds)
            stopping = contrib.stop_requested()
            if step % args.save_every == 0 or stopping:
                with contrib.checkpoint(step) as ckpt:
                    (ckpt / "state.json").write_text(json.dumps(state))
                print(f"step {step}: checkpoint written (loss {err * err:.4f})", flush=True)
            if stopping:
                print(f"stopping at step {step} after a checkpoint", flush=True)
                return contrib.EXIT_STOPPED
    (out / "model.json").write_text(json.dumps(state))
    print(f"done: w={state['w']:.3f} b={state['b']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(contrib.finish(main()))
