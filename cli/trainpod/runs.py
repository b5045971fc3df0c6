"""The local run registry: one JSON file per run under ``$state_dir/runs/``.

Every backend records what it launched here (run id, backend, provider id, output location), so
``trainpod runs list|status|logs|cancel`` can find runs later. Files are written atomically; a
corrupt file is reported by name, never silently dropped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainpod.errors import TrainpodError, available, did_you_mean
from trainpod.manifest import atomic_write_bytes

if TYPE_CHECKING:
    pass


class RunHandle(BaseModel):
    """What the run registry keeps to find a run again."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    backend: str
    preset: str
    provider_id: str | None = None  # pid, container id, pod id
    output: str
    created: str
    extra: dict[str, Any] = Field(default_factory=dict)



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
            if len(matches) > 1:
                raise TrainpodError(
                    f"ambiguous: {len(matches)} runs match '{run_id}':\n" + "\n".join(f"  {m}" for m in matches),
                    "give more of the run id",
                )
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


def local_output(registry: RunRegistry, ref: str) -> Path:
    """A run's output as a local directory: ``ref`` is that directory, or a run id (unique prefixes work).

    A run whose output is in S3 resolves to where its outputs were downloaded after it finished."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise TrainpodError(f"{ref}: not a directory", "pass a run's output directory or its run id")
    try:
        handle = registry.get(ref)
    except TrainpodError as exc:
        raise TrainpodError(f"'{ref}' is neither a directory nor a known run: {exc.message}",
                            exc.hint or "pass a run's output directory or its run id") from None
    downloaded = handle.extra.get("downloaded")
    if isinstance(downloaded, str) and Path(downloaded).is_dir():
        return Path(downloaded)
    if handle.output.startswith("s3://"):
        raise TrainpodError(f"run {handle.run_id}: its outputs are in {handle.output} and were not downloaded",
                            f"trainpod data pull {handle.output} DIR (then: trainpod evaluate DIR --data ...)")
    out = Path(handle.output)
    if not out.is_dir():
        raise TrainpodError(f"run {handle.run_id}: its output directory {out} does not exist (any more)")
    return out
