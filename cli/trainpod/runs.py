"""The local run registry: one JSON file per run under ``$state_dir/runs/``.

Every backend records what it launched here (run id, backend, provider id, output location), so
``trainpod runs list|status|logs|cancel`` can find runs later. Files are written atomically; a
corrupt file is reported by name, never silently dropped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from trainpod.backends.base import RunHandle
from trainpod.errors import TrainpodError, available, did_you_mean
from trainpod.manifest import atomic_write_bytes


class RunRegistry:
    def __init__(self, state_dir: str | os.PathLike[str]):
        self.dir = Path(state_dir).expanduser() / "runs"

    def path(self, run_id: str) -> Path:
        return self.dir / f"{run_id}.json"

    def save(self, handle: RunHandle) -> Path:
        return atomic_write_bytes(self.path(handle.run_id), handle.model_dump_json(indent=2).encode())

    def update(self, run_id: str, **extra: object) -> RunHandle:
        handle = self.get(run_id)
        handle.extra.update(extra)
        self.save(handle)
        return handle

    def get(self, run_id: str) -> RunHandle:
        p = self.path(run_id)
        if not p.is_file():
            ids = self.ids()
            # allow unique prefixes, like git
            matches = [i for i in ids if i.startswith(run_id)]
            if len(matches) == 1:
                return self.get(matches[0])
            raise TrainpodError(
                f"no run '{run_id}' in {self.dir}{did_you_mean(run_id, ids)}",
                f"known runs: {available(ids[-10:])}" if ids else "launch one with `trainpod launch PRESET`",
            )
        try:
            return RunHandle.model_validate_json(p.read_bytes())
        except (ValidationError, ValueError) as exc:
            raise TrainpodError(f"{p}: corrupt run record ({exc.__class__.__name__})",
                                f"inspect or delete {p}") from None

    def ids(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json"))

    def all(self) -> list[RunHandle]:
        out = []
        for rid in self.ids():
            try:
                out.append(self.get(rid))
            except TrainpodError:
                continue
        return sorted(out, key=lambda h: h.created)

    def as_json(self) -> str:
        return json.dumps([h.model_dump(mode="json") for h in self.all()], indent=2)
