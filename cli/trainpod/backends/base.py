"""The one small interface every backend implements, and the pure-data launch plan.

``plan(spec)`` is pure (no network, no engine): it refuses unsupported combinations with a
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
from trainpod.runs import RunHandle as RunHandle  # re-exported: the handle every backend returns
from trainpod.runs import RunRegistry
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
    """One target. Constructed with the run's :class:`Settings` (``get_backend(name, settings)``); every method
    uses them, so ``--profile`` reaches status, logs and cancel as it reaches plan and submit. ``plan``/``submit``
    still accept an explicit ``settings`` for callers that hold another set (it wins over the constructor's)."""

    name: str
    pulls_images: bool  # the target pulls the run's image from the registry: push it before submit

    @property
    def settings(self) -> Settings: ...

    def unsupported(self, spec: RunSpec) -> list[str]:
        """Reasons this backend cannot run ``spec`` (empty = fine). Checked inside plan()."""

    def preflight(self, settings: Settings | None = None) -> None:
        """Checks of seconds before anything slow or costly at submit (RunPod: the API key is set)."""

    def plan(self, spec: RunSpec, settings: Settings | None = None) -> LaunchPlan:
        """Pure: no network, no engine, no file written."""

    def submit(self, plan: LaunchPlan, settings: Settings | None = None) -> RunHandle: ...

    def status(self, handle: RunHandle) -> RunStatus: ...

    def logs(self, handle: RunHandle, follow: bool = False) -> Iterator[str]: ...

    def cancel(self, handle: RunHandle) -> None:
        """Idempotent; never raises when the run is already gone."""

    def relaunch(self, handle: RunHandle, settings: Settings | None = None) -> RunHandle | None:
        """A new attempt for a preempted run, resuming from its latest complete checkpoint; None where the
        target does not relaunch (the run stays preempted: ``trainpod launch … --resume`` continues it)."""

    def release(self, handle: RunHandle, status: RunStatus, settings: Settings | None = None) -> Iterator[str]:
        """The last step of following a run (e.g. confirm a pod stopped billing); lines to show. Empty where
        nothing outlives the run."""


class BackendBase:
    """What every backend shares: the settings it was constructed with, and the no-op relaunch/release."""

    name = ""
    pulls_images = False

    def __init__(self, settings: Settings | None = None):
        self._settings = settings

    @property
    def settings(self) -> Settings:
        """The constructor's settings; without any, the environment's (and ``TRAINPOD_PROFILE``'s), loaded once."""
        if self._settings is None:
            from trainpod.settings import load_settings

            self._settings = load_settings()
        return self._settings

    def _use(self, settings: Settings | None) -> Settings:
        """An explicit ``settings`` argument wins, and stays for the backend's later calls."""
        if settings is not None:
            self._settings = settings
        return self.settings

    def preflight(self, settings: Settings | None = None) -> None:
        return None

    def _record_cancel(self, handle: RunHandle, **extra: object) -> None:
        """Persist a cancellation so a later ``status`` says cancelled, not preempted or failed. A handle built by
        hand (its run id not in this registry) keeps only its in-memory flag."""
        registry = RunRegistry(self.settings.state_path)
        if handle.run_id in registry.ids():
            registry.update(handle.run_id, cancelled=True, **extra)

    def relaunch(self, handle: RunHandle, settings: Settings | None = None) -> RunHandle | None:
        return None

    def release(self, handle: RunHandle, status: RunStatus, settings: Settings | None = None) -> Iterator[str]:
        return iter(())
