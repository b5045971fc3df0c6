#!/usr/bin/env python3
"""CLI start-up time, measured side by side in one run (these machines are noisy).

Prints the median wall time of `trainpod --help`, `trainpod list presets` and `trainpod show smoke`
next to `python -c pass` and, for scale, `python -c "import torch"` when torch is installed.
Runs are interleaved round-robin so drift in machine load hits every command alike.

    python benchmarks/cli_startup.py [--rounds 15]

Target: `trainpod --help` median <= 0.15 s here.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import time

TARGET_HELP_S = 0.15


def commands() -> dict[str, list[str]]:
    exe = shutil.which("trainpod")
    tp = [exe] if exe else [sys.executable, "-m", "trainpod"]
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "trainpod --help": [*tp, "--help"],
        "trainpod list presets": [*tp, "list", "presets"],
        "trainpod show smoke": [*tp, "show", "smoke"],
        "trainpod launch smoke --dry-run": [*tp, "launch", "smoke", "--remote", "local", "--dry-run", "--json"],
    }
    if importlib.util.find_spec("torch") is not None:
        cmds["python -c 'import torch' (scale)"] = [sys.executable, "-c", "import torch"]
    return cmds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    cmds = commands()
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for argv in cmds.values():  # warm the page cache once
        subprocess.run(argv, capture_output=True, check=False)
    for _ in range(args.rounds):
        for name, argv in cmds.items():
            t0 = time.perf_counter()
            proc = subprocess.run(argv, capture_output=True, check=False)
            times[name].append(time.perf_counter() - t0)
            if proc.returncode != 0:
                print(f"{name} failed: {proc.stderr.decode()[-400:]}", file=sys.stderr)
                return 1
    base = statistics.median(times["python -c pass"])
    print(f"{'command':40s} {'median s':>9s} {'p90 s':>8s} {'x python':>9s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        p90 = sorted(ts)[int(0.9 * (len(ts) - 1))]
        print(f"{name:40s} {med:9.3f} {p90:8.3f} {med / base:9.1f}")
    help_med = statistics.median(times["trainpod --help"])
    verdict = "PASS" if help_med <= TARGET_HELP_S else "MISS"
    print(f"\ntarget: trainpod --help median <= {TARGET_HELP_S:.2f} s -> {help_med:.3f} s  [{verdict}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
