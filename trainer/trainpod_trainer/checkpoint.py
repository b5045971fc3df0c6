"""Checkpoints: everything needed to continue a run exactly, written manifest-last.

A checkpoint directory ``checkpoints/step-NNNNNNNN/`` holds the model (adapter or full weights),
``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` (python / numpy / torch / cuda generator states) and
``trainer_state.json`` (step, data position, best loss, history). ``manifest.json`` (files, sizes,
sha256; see :mod:`trainpod.manifest`) is written last, so a directory without a valid manifest is
partial and is never resumed from. Retention keeps the last K complete checkpoints; the best model
lives separately in ``best/``.

Under DeepSpeed the model/optimizer/scheduler part is DeepSpeed's own (``mp_rank_00_model_states.pt``
and one ``zero_pp_rank_N_..._optim_states.pt`` per rank, written by every rank through
:func:`trainpod_trainer.ds.save`); rank 0 adds ``rng.pt`` and ``trainer_state.json`` and the manifest
with :func:`finish` once a barrier says every rank's shard is on disk.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from trainpod.manifest import (
    atomic_write_bytes,
    latest_complete,
    list_checkpoints,
    verify_dir,
    write_manifest,
)
from trainpod_trainer.model import load_weights, save_weights

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """The loop's own state; JSON in every checkpoint."""

    step: int = 0
    epoch: int = 0  # data position: next micro-batch is `batch` of `epoch`
    batch: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    best_val_loss: float | None = None
    best_step: int | None = None
    last_val_loss: float | None = None
    evals_without_improvement: int = 0
    last_loss: float | None = None  # per-step history is in logs/metrics.jsonl, not here

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> TrainerState:
        # keys a newer/older trainer wrote but this one does not know are ignored, not fatal
        raw = json.loads(data)
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: Path, model: Any, optimizer: Any, scheduler: Any, state: TrainerState,
         rng: dict[str, Any], scaler: Any = None) -> Path:
    """Write a complete checkpoint into ``directory`` (replacing a stale partial one), manifest last."""
    import torch

    fresh_dir(directory)
    save_weights(model, directory)
    torch.save(optimizer.state_dict(), directory / "optimizer.pt")
    torch.save(scheduler.state_dict(), directory / "scheduler.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), directory / "scaler.pt")
    return finish(directory, state, rng)


def fresh_dir(directory: Path) -> None:
    """An empty ``directory`` (a stale partial one from a crash is replaced)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def finish(directory: Path, state: TrainerState, rng: dict[str, Any]) -> Path:
    """Add the loop state and RNG states, then the manifest, last: the checkpoint is now complete.
    Separate from :func:`save` because under DeepSpeed every rank writes its shard first."""
    import torch

    torch.save(rng, directory / "rng.pt")
    atomic_write_bytes(directory / STATE_FILE, state.to_json())
    write_manifest(directory, step=state.step)
    return directory


def load(directory: Path, model: Any, optimizer: Any, scheduler: Any, scaler: Any = None) -> TrainerState:
    """Restore model, optimizer, scheduler and RNG states in place; return the loop state."""
    import torch

    load_weights(model, directory)
    optimizer.load_state_dict(torch.load(directory / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(directory / "scheduler.pt", weights_only=False))
    if scaler is not None and (directory / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(directory / "scaler.pt", weights_only=False))
    return load_state(directory)


def load_state(directory: Path) -> TrainerState:
    """Restore the RNG states and return the loop state (the model side is loaded by the caller)."""
    import torch

    set_rng_state(torch.load(directory / "rng.pt", weights_only=False))
    return TrainerState.from_json((directory / STATE_FILE).read_bytes())


def find_resume(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint (hashes verified); partial ones are skipped."""
    return latest_complete(checkpoints, check_hashes=True)


def prune(checkpoints: Path, keep: int, may_delete: Callable[[Path], bool] | None = None) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep``, and partial ones older than the newest
    complete one (leftovers of a crash). ``may_delete`` vetoes deleting a complete one (e.g. its upload
    has not finished). Returns what was removed."""
    removed = []
    complete_seen = 0
    for _, path in list_checkpoints(checkpoints):
        complete = not verify_dir(path, check_hashes=False)
        if complete:
            complete_seen += 1
            if complete_seen <= keep or (may_delete is not None and not may_delete(path)):
                continue
        elif complete_seen == 0:
            continue  # a partial newer than every complete one may still be being written
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def save_best(output: Path, model: Any, tokenizer: Any, step: int, val_loss: float) -> Path:
    """Replace ``best/`` with the current weights (written beside it, then swapped in)."""
    best = output / "best"
    tmp = output / ".best.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_weights(model, tmp)
    tokenizer.save_pretrained(str(tmp))
    atomic_write_bytes(tmp / "best.json", json.dumps({"step": step, "val_loss": val_loss}).encode())
    write_manifest(tmp, step=step)
    old = output / ".best.old"
    if best.exists():
        best.rename(old)
    tmp.rename(best)
    shutil.rmtree(old, ignore_errors=True)
    return best

