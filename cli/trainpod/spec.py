"""RunSpec: the only contract between the launcher and the container.

A RunSpec is frozen, JSON-serialisable, and holds no secret: the resolved TrainingConfig, the run
id, the image reference, storage URIs and the launch shape. The trainer reads it from
``$TRAINPOD_RUN_SPEC`` (JSON) or ``--spec FILE`` and re-validates it with these same models.
Secrets travel as separate environment variables and never enter the spec.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from trainpod import __version__
from trainpod.config.schema import Remote, Strict, TrainingConfig
from trainpod.contract import CHECKPOINTS_DIR, DONE, ENV_GIT_COMMIT, ENV_RUN_SPEC, LOGS_DIR
from trainpod.errors import ConfigError

SPEC_ENV = ENV_RUN_SPEC
SCHEMA_VERSION = 1


class LaunchShape(Strict):
    """How many processes, on how many nodes, started by which launcher."""

    launcher: Literal["python", "torchrun", "deepspeed"] = "python"
    nproc_per_node: int = Field(default=1, ge=1)
    nnodes: int = Field(default=1, ge=1)
    master_port: int = Field(default=29500, ge=1024, le=65535)


class StorageURIs(Strict):
    """Where the run reads and writes. Local paths or ``s3://bucket/prefix``.

    ``output`` is the run's root: final artefacts (adapter, tokenizer, metadata.json), ``checkpoints/``,
    ``logs/`` and the ``DONE`` marker all live under it.
    """

    dataset: str
    output: str

    @property
    def checkpoints(self) -> str:
        return self.output.rstrip("/") + "/" + CHECKPOINTS_DIR

    @property
    def logs(self) -> str:
        return self.output.rstrip("/") + "/" + LOGS_DIR

    @property
    def done_marker(self) -> str:
        return self.output.rstrip("/") + "/" + DONE


class RunSpec(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{2,80}$")
    created: str
    trainpod_version: str = __version__
    git_commit: str | None = None
    remote: Remote
    config: TrainingConfig
    image: str | None = None
    storage: StorageURIs
    launch: LaunchShape = LaunchShape()
    dataset_manifest_sha256: str | None = None
    resume: bool = True
    # A pipeline stage after the first starts from the previous stage's output root (local path or s3:// URI):
    # its LoRA adapter or full weights. Ignored when this run resumes its own checkpoint.
    init_from: str | None = None
    stop_grace_seconds: float = Field(default=60.0, gt=0)

    # --------------------------------------------------------------- (de)serialisation
    def to_json(self, indent: int | None = None) -> str:
        """JSON; ``init_from`` is left out when unset, so a spec without it reads exactly as before the field."""
        return self.model_dump_json(indent=indent, exclude={"init_from"} if self.init_from is None else None)

    @classmethod
    def from_json(cls, text: str, source: str = SPEC_ENV) -> RunSpec:
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            from trainpod.config.loader import format_validation_error

            raise format_validation_error(exc, f"{source}: RunSpec", cls) from None

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> RunSpec:
        """Read from ``path`` if given, else from ``$TRAINPOD_RUN_SPEC``."""
        if path is not None:
            p = Path(path)
            try:
                return cls.from_json(p.read_text(encoding="utf-8"), source=str(p))
            except FileNotFoundError:
                raise ConfigError(f"{p}: RunSpec file not found") from None
        text = os.environ.get(SPEC_ENV)
        if not text:
            raise ConfigError(
                f"no RunSpec: set {SPEC_ENV} to the spec JSON or pass --spec FILE",
                "trainpod launch writes it for you; `trainpod launch PRESET --dry-run` prints one",
            )
        return cls.from_json(text)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp name, then rename)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        tmp.write_text(self.to_json(indent=2), encoding="utf-8")
        os.replace(tmp, p)
        return p


def new_run_id(preset: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    slug = "".join(c if c.isalnum() else "-" for c in preset.lower()).strip("-")[:40] or "run"
    return f"{slug}-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def utcnow_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The commit of the source tree (``TRAINPOD_GIT_COMMIT`` inside images), or None."""
    env = os.environ.get(ENV_GIT_COMMIT)
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
