"""RunSpec: the only contract between the launcher and the container.

A RunSpec is frozen, JSON-serialisable, and holds no secret: the workload (the built-in trainer on a resolved
TrainingConfig, or a custom job's command), the run id, the image reference, storage URIs and the launch shape.
The trainer and the job supervisor read it from ``$TRAINPOD_RUN_SPEC`` (JSON) or ``--spec FILE`` and re-validate
it with these same models. Secrets travel as separate environment variables and never enter the spec.
"""

from __future__ import annotations

import functools
import os
import secrets
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from trainpod import __version__
from trainpod.config.schema import Hardware, Remote, Strict, TrainingConfig
from trainpod.contract import CHECKPOINTS_DIR, DONE, ENV_GIT_COMMIT, ENV_RUN_SPEC, LOGS_DIR
from trainpod.errors import ConfigError, TrainpodError

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


class TrainerWorkload(Strict):
    """The built-in trainer (``python -m trainpod_trainer``) on a resolved preset."""

    kind: Literal["trainer"] = "trainer"
    config: TrainingConfig

    @property
    def name(self) -> str:
        return self.config.preset

    @property
    def hardware_name(self) -> str:
        return self.config.hardware_name

    @property
    def hardware(self) -> Hardware:
        return self.config.hardware

    @property
    def max_runtime_minutes(self) -> float | None:
        return self.config.max_runtime_minutes

    @property
    def max_cost_usd(self) -> float | None:
        return self.config.max_cost_usd

    @property
    def spot(self) -> bool:
        return self.config.spot

    @property
    def env(self) -> dict[str, str]:
        return {}


class CommandWorkload(Strict):
    """A ``[jobs.NAME]`` table resolved for one run: the user's own command, run under the job supervisor
    (``python -m trainpod.pod.jobrun``) in ``project_dir`` (the project image layer in a container)."""

    kind: Literal["command"] = "command"
    name: str
    hardware_name: str
    hardware: Hardware
    project_dir: str
    command: list[str] = Field(min_length=1)
    requirements: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    sync_uri: str | None = Field(default=None, description="s3:// prefix the output directory is mirrored to")
    max_runtime_minutes: float | None = None
    max_cost_usd: float | None = None
    spot: bool = False
    sync_interval_seconds: float = 60.0
    log_sync_interval_seconds: float = 10.0
    base_image: str | None = Field(default=None, description="hardware image under the project layer (containers)")


Workload = Annotated[TrainerWorkload | CommandWorkload, Field(discriminator="kind")]


class RunSpec(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{2,80}$")
    created: str
    trainpod_version: str = __version__
    git_commit: str | None = None
    remote: Remote
    workload: Workload
    image: str | None = None
    storage: StorageURIs
    launch: LaunchShape = LaunchShape()
    dataset_manifest_sha256: str | None = None
    resume: bool = True
    # A pipeline stage after the first gets the previous stage's output root (local path or s3:// URI): the trainer
    # starts from its LoRA adapter or full weights (unless it resumes its own checkpoint); a command reads it as
    # TRAINPOD_PREVIOUS_OUTPUT.
    init_from: str | None = None
    stop_grace_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _workload_from_config(cls, data: Any) -> Any:
        """``config=`` (a preset's TrainingConfig) is shorthand for the trainer workload."""
        if isinstance(data, dict) and "config" in data and "workload" not in data:
            data = dict(data)
            data["workload"] = {"kind": "trainer", "config": data.pop("config")}
        return data

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> RunSpec:
        """``update={"config": cfg}`` replaces the trainer workload's config (as ``RunSpec(config=...)`` builds one)."""
        if update and "config" in update:
            update = {**update, "workload": TrainerWorkload(config=update["config"])}
            del update["config"]
        return super().model_copy(update=update, deep=deep)

    @property
    def config(self) -> TrainingConfig:
        """The preset's resolved config; only a trainer workload has one."""
        if not isinstance(self.workload, TrainerWorkload):
            raise TrainpodError(f"run {self.run_id} runs the command of job '{self.workload.name}', not the trainer")
        return self.workload.config

    def registry_extra(self) -> dict[str, Any]:
        """What the run registry keeps about the workload besides the handle: a command's job, mirror and input."""
        if isinstance(self.workload, CommandWorkload):
            return {"job": self.workload.name, "sync_uri": self.workload.sync_uri, "previous_output": self.init_from}
        return {}

    @property
    def output_uri(self) -> str:
        """Where the run's results outlive the machine: a command's S3 mirror when it has one, else the output."""
        mirror = self.workload.sync_uri if isinstance(self.workload, CommandWorkload) else None
        return (mirror or self.storage.output).rstrip("/")

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


SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout trainpod runs from (images are built from it)


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The commit of the source tree (``TRAINPOD_GIT_COMMIT`` inside images), or None. ``git rev-parse`` runs once
    per directory and process: a launch asks for it for the RunSpec and for the image's label."""
    return os.environ.get(ENV_GIT_COMMIT) or _rev_parse(str(Path(cwd or SOURCE_ROOT).resolve()))


@functools.lru_cache(maxsize=8)
def _rev_parse(cwd: str) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
