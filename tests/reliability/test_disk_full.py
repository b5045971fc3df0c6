"""Disk full in the output directory: a clear error, the last complete checkpoint intact, and the
same run resumes from it once there is room.

The output directory is a small tmpfs (or, where tmpfs mounts are refused, a loop-mounted ext4
image). When the trainer's first checkpoint is complete, a ballast file fills the file system;
the next write fails. Freeing the ballast and running the same spec again must finish the run.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fixtures.train import run_trainer, start_trainer, wait_for, write_spec
from trainpod.manifest import checkpoint_name, latest_complete, verify_dir

pytestmark = [pytest.mark.chaos, pytest.mark.train]

SEED = 77
TRIALS = 2
MAX_STEPS, SAVE_STEPS = 15, 3
FAILED = 1  # trainpod_trainer.exitcodes.FAILED


def _mount(mnt: Path, img: Path) -> str:
    """Mount a 2 MiB file system at ``mnt``; return how ("tmpfs" / "loop"), or raise OSError."""
    mnt.mkdir(parents=True)
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if tmpfs.returncode == 0:
        return "tmpfs"
    subprocess.run(["truncate", "-s", "4M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True, capture_output=True)
    loop = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True, text=True)
    if loop.returncode != 0:
        raise OSError(f"tmpfs: {tmpfs.stderr.decode().strip()}; loop: {loop.stderr.strip()}")
    return "loop"


@contextlib.contextmanager
def small_fs(root: Path) -> Iterator[tuple[Path, str]]:
    mnt = root / "mnt"
    try:
        how = _mount(mnt, root / "fs.img")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small file system here (needs root and mount): {exc}")
    try:
        yield mnt, how
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> None:
    with open(mnt / "ballast", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)


def _trial(root: Path, trial: int) -> dict:
    fill_after = random.Random(SEED + trial).choice((3, 6, 9))
    with small_fs(root / f"t{trial}") as (mnt, how):
        out = mnt / "out"
        spec = write_spec(out, f"chaos-disk-{trial}", max_steps=MAX_STEPS, save_steps=SAVE_STEPS, eval_steps=1000,
                          logging_steps=1, keep_checkpoints=2)
        proc = start_trainer(spec, OMP_NUM_THREADS="1")
        wait_for(lambda: (out / "checkpoints" / checkpoint_name(fill_after) / "manifest.json").is_file(),
                 timeout=120, proc=proc)
        _fill(mnt)
        log, _ = proc.communicate(timeout=120)
        kept = latest_complete(out / "checkpoints")
        result = {"how": how, "fill_after": fill_after, "exit": proc.returncode, "log": log,
                  "kept": kept.name if kept else None, "intact": kept is not None and not verify_dir(kept)}
        (mnt / "ballast").unlink()
        again = run_trainer(spec, OMP_NUM_THREADS="1")
        result["resumed"] = again.returncode == 0 and (out / "DONE").is_file() and f"resumed from {kept}" in again.stderr
        result["resume_log"] = again.stderr[-1500:]
    return result


def test_disk_full_gives_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, chaos_record):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda i: _trial(tmp_path, i), range(TRIALS)))
    ok = [r for r in results if r["exit"] == FAILED and "no space left on device" in r["log"]
          and "Traceback" not in r["log"] and r["intact"] and r["resumed"]]
    chaos_record(f"disk full in output dir ({results[0]['how']} 2 MiB)", TRIALS, len(ok),
                 "; ".join(f"full after step {r['fill_after']}: exit {r['exit']}, kept {r['kept']}, "
                           f"resumed={r['resumed']}" for r in results))
    for r in results:
        assert r["exit"] == FAILED, r["log"][-3000:]
        assert "no space left on device" in r["log"] and "hint:" in r["log"], r["log"][-3000:]
        assert "Traceback" not in r["log"], r["log"][-3000:]
        assert r["kept"] is not None and r["intact"], r
        assert r["resumed"], r["resume_log"]
