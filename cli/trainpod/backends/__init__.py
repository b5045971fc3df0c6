"""The targets a run launches on: one backend class per target (local, docker, runpod), each implementing
:class:`trainpod.backends.base.Backend`. :func:`get_backend` imports only the one asked for, so the docker and
RunPod SDKs load when a command needs them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainpod.backends.base import Backend
    from trainpod.settings import Settings

BACKENDS = ("local", "docker", "runpod")


def get_backend(name: str, settings: Settings | None = None) -> Backend:
    """The backend for ``name`` on ``settings``; imports only the backend asked for (SDKs load lazily)."""
    if name == "local":
        from trainpod.backends.local import LocalBackend

        return LocalBackend(settings)
    if name == "docker":
        from trainpod.backends.docker import DockerBackend

        return DockerBackend(settings)
    if name == "runpod":
        from trainpod.backends.runpod import RunPodBackend

        return RunPodBackend(settings)
    if name == "runpod-cluster":  # chosen by the launcher for a multi-node preset with --remote runpod
        from trainpod.backends.runpod_cluster import RunPodClusterBackend

        return RunPodClusterBackend(settings)
    from trainpod.errors import ConfigError, did_you_mean

    raise ConfigError(f"unknown remote '{name}'{did_you_mean(name, list(BACKENDS))}")
