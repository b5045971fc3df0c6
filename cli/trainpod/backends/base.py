"""The one small interface every backend implements, and the pure-data launch plan.

``plan(spec, settings)`` is pure (no network, no engine): it refuses unsupported combinations with a
reason *before* anything is spent, and returns a :class:`LaunchPlan` that ``--dry-run`` prints exactly
as it will be sent. Secret values never enter a plan: ``secret_env`` names the variables that
``submit`` fills in from settings at the last moment, and displays show them as ``***``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from trainpod.contract import TERMINAL_STATES as TERMINAL_STATES  # re-exported: backends speak of run states
from trainpod.contract import RunState
from trainpod.redact import REDACTED
from trainpod.settings import Settings
from trainpod.spec import RunSpec


class Mount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    source: str
    target: str
    read_only: bool = False


class LaunchPlan(BaseModel):
    """Everything a backend will send, as data. Contains no secret values."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str
    run_id: str
    image: str | None = None
    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: list[str] = Field(default_factory=list, description="names filled from settings at submit")
    mounts: list[Mount] = Field(default_factory=list)
    workdir: str | None = None
    gpus: int = 0
    provider_request: dict[str, Any] = Field(default_factory=dict)
    estimated_cost_usd: float | None = None
    notes: list[str] = Field(default_factory=list)
    # what a remote pod receives, by name and scope (never values): [{name, kind, scope, expires}]
    credentials: list[dict[str, Any]] = Field(default_factory=list)
    spec: RunSpec

    def display(self) -> dict[str, Any]:
        """The plan as printed by ``--dry-run``: secrets appear by name with value ``***``."""
        data = self.model_dump(mode="json", exclude={"spec"})
        data["env"] = {**self.env, **{k: REDACTED for k in self.secret_env}}
        data["spec"] = self.spec.model_dump(mode="json")
        return data


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


class RunStatus(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: RunState
    detail: str = ""
    exit_code: int | None = None
    step: int | None = None
    loss: float | None = None
    elapsed_s: float | None = None
    cost_usd: float | None = None
    billed_usd: float | None = None  # what the provider actually billed (RunPod REST v2 /v2/billing/pods)
    estimated_cost_usd: float | None = None  # the launch-time estimate, for comparison


@runtime_checkable
class Backend(Protocol):
    name: str

    def unsupported(self, spec: RunSpec) -> list[str]:
        """Reasons this backend cannot run ``spec`` (empty = fine). Checked inside plan()."""

    def plan(self, spec: RunSpec, settings: Settings) -> LaunchPlan: ...

    def submit(self, plan: LaunchPlan, settings: Settings) -> RunHandle: ...

    def status(self, handle: RunHandle) -> RunStatus: ...

    def logs(self, handle: RunHandle, follow: bool = False) -> Iterator[str]: ...

    def cancel(self, handle: RunHandle) -> None:
        """Idempotent; never raises when the run is already gone."""


def get_backend(name: str) -> Backend:
    """Import only the backend asked for (docker/runpod SDKs load lazily)."""
    if name == "local":
        from trainpod.backends.local import LocalBackend

        return LocalBackend()
    if name == "docker":
        from trainpod.backends.docker import DockerBackend

        return DockerBackend()
    if name == "runpod":
        from trainpod.backends.runpod import RunPodBackend

        return RunPodBackend()
    if name == "runpod-cluster":  # chosen by the launcher for a multi-node preset with --remote runpod
        from trainpod.backends.runpod_cluster import RunPodClusterBackend

        return RunPodClusterBackend()
    from trainpod.errors import ConfigError, did_you_mean

    raise ConfigError(f"unknown remote '{name}'{did_you_mean(name, ['local', 'docker', 'runpod'])}")
