"""``python -m trainpod_trainer.launch TORCHRUN_ARGS...``: torchrun, but exiting with the trainer's code.

Why: torchrun exits 1 whenever a worker exits non-zero, and on SIGTERM it stops its workers and then
dies with a ``SignalException`` traceback (exit 1). So the trainer's named exit codes
(:mod:`trainpod_trainer.exitcodes`: 3 = stopped after a complete checkpoint, 4 = memory, 2 = bad input)
never reach the backend that has to tell "cancelled, resumable" from "failed".

This wrapper runs torchrun as a child in its own session and forwards SIGTERM/SIGINT to it exactly
once (torchrun passes it on to every rank and waits for them: the ranks agree on a stop step and write
one checkpoint). A second signal would make torchrun abandon that wait, which is why the child is not
in our process group: a ``kill`` of the launcher's group reaches torchrun only through us. If we are
SIGKILLed, the kernel sends torchrun SIGTERM (``PR_SET_PDEATHSIG``), so no rank is orphaned.

Each rank records its exit code in ``$TRAINPOD_EXIT_CODE_DIR/rank-N`` (see ``run.main``); the wrapper
returns the most severe code recorded on this node: crash > bad input > memory > stopped > ok.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from trainpod.contract import ENV_EXIT_CODE_DIR, record_exit_code
from trainpod_trainer import exitcodes

EXIT_DIR_ENV = ENV_EXIT_CODE_DIR
__all__ = ["combine", "main", "record_exit_code"]  # record_exit_code: each rank calls it (run.main)
SEVERITY = (exitcodes.FAILED, exitcodes.BAD_INPUT, exitcodes.MEMORY, exitcodes.STOPPED, exitcodes.OK)


def combine(codes: list[int], launcher_code: int) -> int:
    """The node's exit code: the most severe rank code; torchrun's own code if no rank recorded one."""
    if launcher_code == 0:
        return exitcodes.OK
    known = [c for c in SEVERITY if c in codes]
    if known:
        return known[0]
    if codes:  # a code outside the table (a library called sys.exit): pass it through
        return max(codes)
    return 128 - launcher_code if launcher_code < 0 else launcher_code


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="trainpod-exit-") as exit_dir:
        env = {**os.environ, EXIT_DIR_ENV: exit_dir}
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        child = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args], env=env,
                                 start_new_session=True, preexec_fn=preexec)
        forwarded = False

        def forward(signum: int, _frame: object) -> None:
            nonlocal forwarded
            if not forwarded:  # torchrun must see one signal only (see the module docstring)
                forwarded = True
                child.send_signal(signum)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, forward)
        rc = child.wait()
        codes = [int(p.read_text()) for p in Path(exit_dir).glob("rank-*")]
    return combine(codes, rc)


if __name__ == "__main__":
    sys.exit(main())
